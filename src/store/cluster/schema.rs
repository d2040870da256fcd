//! The PostgreSQL schema, as numbered migrations. Every node runs them at
//! start-up under one transaction-scoped advisory lock, so nodes starting
//! together apply each migration once; a node refuses a database whose
//! schema is newer than it knows.

use super::super::{Error, Result};

/// Taken by every node migrating the schema: "berth" in ASCII.
const MIGRATION_LOCK: i64 = 0x0062_6572_7468;

/// Each entry takes the schema from its index to the next version. Key
/// columns collate as bytes ("C"), so listings sort as the embedded
/// store's do.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE blobs (
    digest text COLLATE "C" PRIMARY KEY,
    size bigint NOT NULL,
    touched bigint NOT NULL
);
CREATE TABLE links (
    digest text COLLATE "C" NOT NULL,
    repo text COLLATE "C" NOT NULL,
    linked bigint NOT NULL,
    PRIMARY KEY (digest, repo)
);
CREATE INDEX links_by_repo ON links (repo, digest);
CREATE TABLE blob_refs (
    blob text COLLATE "C" NOT NULL,
    repo text COLLATE "C" NOT NULL,
    manifest text COLLATE "C" NOT NULL,
    PRIMARY KEY (blob, repo, manifest)
);
CREATE TABLE repos (
    name text COLLATE "C" PRIMARY KEY,
    updated bigint NOT NULL
);
CREATE TABLE manifests (
    repo text COLLATE "C" NOT NULL,
    digest text COLLATE "C" NOT NULL,
    media_type text NOT NULL,
    body bytea NOT NULL,
    blobs text[] NOT NULL,
    children text[] NOT NULL,
    subject text,
    artifact_type text,
    annotations text,
    created bigint NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE TABLE tags (
    repo text COLLATE "C" NOT NULL,
    tag text COLLATE "C" NOT NULL,
    digest text NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE TABLE referrers (
    repo text COLLATE "C" NOT NULL,
    subject text COLLATE "C" NOT NULL,
    referrer text COLLATE "C" NOT NULL,
    PRIMARY KEY (repo, subject, referrer)
);
CREATE TABLE uploads (
    id text PRIMARY KEY,
    repo text NOT NULL,
    "offset" bigint NOT NULL,
    hash_state bytea NOT NULL,
    piece_keys text[] NOT NULL,
    piece_sizes bigint[] NOT NULL,
    started bigint NOT NULL,
    updated bigint NOT NULL
);
CREATE INDEX uploads_by_repo ON uploads (repo);
CREATE TABLE probes (
    name text PRIMARY KEY,
    at bigint NOT NULL
);
"#,
    r#"
CREATE TABLE secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
"#,
    r#"
CREATE TABLE upstream_tags (
    repo text COLLATE "C" NOT NULL,
    tag text COLLATE "C" NOT NULL,
    fetched bigint NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE TABLE cache_pulls (
    repo text COLLATE "C" NOT NULL,
    digest text COLLATE "C" NOT NULL,
    pulled bigint NOT NULL,
    PRIMARY KEY (repo, digest)
);
"#,
    r#"
CREATE TABLE streams (
    id text PRIMARY KEY,
    seen bigint NOT NULL
);
"#,
    // Before c0312eb a blob DELETE dropped its repository's blob_refs rows:
    // a blob pushed again after one was needed by no manifest as far as
    // the sweep could tell. Rebuilt from the manifests, once.
    r#"
INSERT INTO blob_refs (blob, repo, manifest)
    SELECT DISTINCT unnest(blobs), repo, digest FROM manifests
    ON CONFLICT DO NOTHING;
"#,
];

/// Brings the schema to this binary's version.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<()> {
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute("CREATE TABLE IF NOT EXISTS berth_schema (version integer NOT NULL)")
        .await?;
    let found: i32 = txn
        .query_opt("SELECT version FROM berth_schema", &[])
        .await?
        .map_or(0, |row| row.get(0));
    let known = i32::try_from(MIGRATIONS.len()).expect("few migrations");
    if found > known {
        return Err(Error::Metadata(format!(
            "the database's schema is version {found}, newer than this berth knows ({known}); \
             run a berth at least as new as the newest node"
        )));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        log::info!("migrating the metadata schema to version {}", version + 1);
        txn.batch_execute(migration).await?;
    }
    if found == 0 {
        txn.execute("INSERT INTO berth_schema (version) VALUES ($1)", &[&known])
            .await?;
    } else if found < known {
        txn.execute("UPDATE berth_schema SET version = $1", &[&known])
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

//! Manifest media types, and what a manifest refers to. The bytes a client
//! pushed are stored untouched; this module only reads them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Layers that live elsewhere by design: a registry does not hold them.
const FOREIGN_LAYERS: [&str; 2] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerList,
}

impl MediaType {
    pub fn parse(s: &str) -> Option<MediaType> {
        // Parameters (`; charset=...`) do not change what the document is.
        match s.split(';').next().unwrap_or("").trim() {
            OCI_MANIFEST => Some(MediaType::OciManifest),
            OCI_INDEX => Some(MediaType::OciIndex),
            DOCKER_MANIFEST => Some(MediaType::DockerManifest),
            DOCKER_LIST => Some(MediaType::DockerList),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::OciManifest => OCI_MANIFEST,
            MediaType::OciIndex => OCI_INDEX,
            MediaType::DockerManifest => DOCKER_MANIFEST,
            MediaType::DockerList => DOCKER_LIST,
        }
    }

    pub fn is_index(self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerList)
    }
}

/// What the store needs to know of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    pub media_type: MediaType,
    /// Config and layers: blobs that must be in the repository.
    pub blobs: Vec<Digest>,
    /// Children of an index: manifests it names, present or not (sparse).
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or else the config's media type, as the referrers API reports it.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: Option<u64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    urls: Vec<String>,
}

impl Descriptor {
    fn digest(&self, what: &str) -> Result<Digest, String> {
        Digest::parse(&self.digest).ok_or_else(|| {
            format!(
                "{what} has an invalid or unsupported digest {:?}",
                self.digest
            )
        })
    }

    fn is_foreign(&self) -> bool {
        is_foreign(self.media_type.as_deref(), &self.urls)
    }
}

/// Whether a layer is foreign (fetched from its `urls`, or of a type not
/// to be redistributed): registries neither need nor carry it.
pub fn is_foreign(media_type: Option<&str>, urls: &[String]) -> bool {
    !urls.is_empty() || media_type.is_some_and(|m| FOREIGN_LAYERS.contains(&m))
}

/// Parses a pushed manifest. `content_type` is the request's Content-Type;
/// the error is a sentence for the client.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, String> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    if doc.schema_version == Some(1) {
        return Err(
            "Docker schema 1 manifests are retired and not accepted: push schema 2 \
             or OCI (docker, podman and skopeo do unless told otherwise)"
                .into(),
        );
    }
    if doc.schema_version != Some(2) {
        return Err("only schemaVersion 2 manifests are supported".into());
    }
    let declared = match doc.media_type.as_deref() {
        Some(m) => Some(
            MediaType::parse(m).ok_or_else(|| format!("unsupported manifest media type {m:?}"))?,
        ),
        None => None,
    };
    let header = content_type.and_then(MediaType::parse);
    let media_type = match (declared, header) {
        (Some(d), Some(h)) if d != h => {
            return Err(format!(
                "Content-Type {} does not match the manifest's mediaType {}",
                h.as_str(),
                d.as_str()
            ));
        }
        (Some(d), _) => d,
        (None, Some(h)) => h,
        (None, None) if doc.manifests.is_some() => MediaType::OciIndex,
        (None, None) => MediaType::OciManifest,
    };

    let mut parsed = ParsedManifest {
        media_type,
        blobs: Vec::new(),
        manifests: Vec::new(),
        subject: doc
            .subject
            .as_ref()
            .map(|s| s.digest("subject"))
            .transpose()?,
        artifact_type: doc.artifact_type,
        annotations: doc.annotations,
    };
    if media_type.is_index() {
        let children = doc.manifests.ok_or("an index must have a manifests list")?;
        for child in &children {
            parsed.manifests.push(child.digest("a child manifest")?);
        }
    } else {
        let config = doc.config.ok_or("an image manifest must have a config")?;
        parsed.blobs.push(config.digest("the config")?);
        if parsed.artifact_type.is_none() {
            parsed.artifact_type = config.media_type;
        }
        let layers = doc
            .layers
            .ok_or("an image manifest must have a layers list")?;
        for layer in layers.iter().filter(|l| !l.is_foreign()) {
            parsed.blobs.push(layer.digest("a layer")?);
        }
    }
    if parsed
        .artifact_type
        .as_deref()
        .is_some_and(|t| t.contains(char::is_control))
    {
        return Err(
            "the artifact type (or the config's media type) holds a control character".into(),
        );
    }
    Ok(parsed)
}

/// `os/architecture[/variant]`, the name `--platform` and the web page use.
pub fn platform_name(os: &str, architecture: &str, variant: Option<&str>) -> String {
    match variant {
        Some(variant) => format!("{os}/{architecture}/{variant}"),
        None => format!("{os}/{architecture}"),
    }
}

/// The name of a platform object (a descriptor's `platform`) or of an
/// image config, which carries the same fields.
pub fn platform(doc: &serde_json::Value) -> Option<String> {
    Some(platform_name(
        doc["os"].as_str()?,
        doc["architecture"].as_str()?,
        doc["variant"].as_str(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_lists_config_and_layers_but_not_foreign_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x/cfg","digest":"{}","size":1}},
               "layers":[{{"digest":"{}","size":1}},
                         {{"digest":"{}","size":1,"urls":["http://x"]}}]}}"#,
            d('a'),
            d('b'),
            d('c')
        );
        let m = parse(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.media_type, MediaType::OciManifest);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some("x/cfg"));
    }

    #[test]
    fn index_lists_children_and_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"digest":"{}"}}],
               "subject":{{"digest":"{}"}}}}"#,
            d('a'),
            d('b')
        );
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.media_type, MediaType::DockerList);
        assert_eq!(m.manifests.len(), 1);
        assert_eq!(m.subject.unwrap().as_str(), d('b'));
    }

    #[test]
    fn refuses_what_it_cannot_vouch_for() {
        assert!(parse(None, b"not json").is_err());
        assert!(parse(None, br#"{"schemaVersion":1}"#).is_err());
        assert!(parse(None, br#"{"schemaVersion":2,"layers":[]}"#).is_err());
        let mismatch = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse(Some(OCI_MANIFEST), mismatch.as_bytes()).is_err());
        let deep = "[".repeat(10_000);
        assert!(parse(None, deep.as_bytes()).is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            Just(Value::from(2)),
            Just(Value::from(OCI_MANIFEST)),
            "sha256:[0-9a-f]{64}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 96, 8, |inner| {
            let key = prop_oneof![
                Just("schemaVersion".to_owned()),
                Just("mediaType".to_owned()),
                Just("config".to_owned()),
                Just("layers".to_owned()),
                Just("manifests".to_owned()),
                Just("digest".to_owned()),
                Just("subject".to_owned()),
                Just("urls".to_owned()),
                Just("annotations".to_owned()),
                any::<String>(),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn digest() -> impl Strategy<Value = String> {
        "[0-9a-f]{64}".prop_map(|hex| format!("sha256:{hex}"))
    }

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn any_bytes_are_judged_without_a_panic(
            body in prop::collection::vec(any::<u8>(), 0..600),
            content_type in proptest::option::of(any::<String>()),
        ) {
            let _ = parse(content_type.as_deref(), &body);
        }

        #[test]
        fn any_json_is_judged_without_a_panic(doc in json_value()) {
            let body = serde_json::to_vec(&doc).unwrap();
            let _ = parse(None, &body);
            let _ = parse(Some(OCI_INDEX), &body);
        }

        #[test]
        fn an_image_lists_its_config_and_layers(
            config in digest(),
            layers in prop::collection::vec(digest(), 0..40),
            media_type in prop_oneof![Just(OCI_MANIFEST), Just(DOCKER_MANIFEST)],
            annotation in any::<String>(),
        ) {
            let doc = json!({
                "schemaVersion": 2,
                "mediaType": media_type,
                "config": {"mediaType": "x/cfg", "digest": config, "size": 1},
                "layers": layers.iter().map(|d| json!({"digest": d, "size": 1})).collect::<Vec<_>>(),
                "annotations": {"odd": annotation},
            });
            let parsed = parse(None, &serde_json::to_vec(&doc).unwrap()).unwrap();
            let blobs: Vec<String> = parsed.blobs.iter().map(|d| d.as_str().to_owned()).collect();
            let mut want = vec![config];
            want.extend(layers);
            prop_assert_eq!(blobs, want);
        }

        #[test]
        fn a_media_type_not_known_is_refused(media_type in any::<String>()) {
            prop_assume!(MediaType::parse(&media_type).is_none());
            let doc = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": []});
            prop_assert!(parse(None, &serde_json::to_vec(&doc).unwrap()).is_err());
        }
    }

    #[test]
    fn deep_objects_are_refused_not_a_stack_overflow() {
        let deep = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
        assert!(parse(None, deep.as_bytes()).is_err());
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        let d = format!("sha256:{}", "a".repeat(64));
        let e = format!("sha256:{}", "e".repeat(64));
        // Which config would count? Clients disagree, so neither does.
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{d}","size":1}},
               "config":{{"digest":"{e}","size":1}},"layers":[]}}"#
        );
        let refused = parse(None, body.as_bytes()).unwrap_err();
        assert!(refused.contains("duplicate"), "{refused}");
    }
}

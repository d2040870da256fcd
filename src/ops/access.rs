//! The access log: one line per request on stderr, as text for people or
//! as one JSON object per line for log collectors.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not a log format: text or json")),
        }
    }
}

/// What one line says of a request.
pub struct Line<'a> {
    pub at: SystemTime,
    pub peer: SocketAddr,
    /// The user who logged in, if any.
    pub user: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// Body bytes each way.
    pub received: u64,
    pub sent: u64,
    pub took: Duration,
    /// The upload session the request worked on, if any.
    pub upload: Option<&'a str>,
}

pub fn write(format: LogFormat, line: &Line<'_>) {
    let time = humantime::format_rfc3339_millis(line.at);
    let text = match format {
        LogFormat::Text => format!(
            "{time} {} {} \"{} {}\" {} {} {} {:.3}ms {}\n",
            line.peer,
            line.user.unwrap_or("-"),
            line.method,
            line.path,
            line.status,
            line.received,
            line.sent,
            line.took.as_secs_f64() * 1000.0,
            line.upload.unwrap_or("-"),
        ),
        LogFormat::Json => {
            let mut json = serde_json::json!({
                "time": time.to_string(),
                "peer": line.peer.to_string(),
                "user": line.user,
                "method": line.method,
                "path": line.path,
                "status": line.status,
                "received": line.received,
                "sent": line.sent,
                "duration_ms": line.took.as_secs_f64() * 1000.0,
                "upload": line.upload,
            })
            .to_string();
            json.push('\n');
            json
        }
    };
    // One write per line, so lines from many requests never interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

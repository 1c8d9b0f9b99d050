//! One signed call of an AWS JSON API (`POST /` with `X-Amz-Target: <prefix>.<Action>`, a
//! JSON body, SigV4) over ureq, the blocking HTTP client on rustls. The endpoint may be
//! `http://` for a local emulator.
use std::time::Duration;

use zeroize::Zeroizing;

use super::sigv4::{self, Credentials};

/// How long one call may take (connecting: 5 s).
const TIMEOUT: Duration = Duration::from_secs(15);

/// An AWS service's JSON API at one endpoint and region.
pub(crate) struct JsonApi {
    agent: ureq::Agent,
    /// `https://host[:port]/`
    url: String,
    /// `host[:port]`, as the `Host` header carries it.
    host: String,
    region: String,
    /// The signing name (`kms`).
    service: &'static str,
    /// The `X-Amz-Target` prefix (`TrentService`).
    target: &'static str,
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum AwsError {
    /// No HTTP answer (or credentials could not be had): the message says why.
    Transport(String),
    /// An error answer: status, the exception's name (`NotFoundException`), its message.
    Api {
        status: u16,
        kind: String,
        message: String,
    },
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwsError::Transport(why) => f.write_str(why),
            AwsError::Api {
                status,
                kind,
                message,
            } => write!(f, "{status} {kind}: {message}"),
        }
    }
}

impl JsonApi {
    /// `endpoint`: `host`, `host:port`, `https://…` or `http://…`; `field` names it in errors.
    pub(crate) fn new(
        endpoint: &str,
        region: &str,
        service: &'static str,
        target: &'static str,
        field: &str,
    ) -> Result<JsonApi, String> {
        let (scheme, rest) = match endpoint.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (s, rest),
            Some((s, _)) => return Err(format!("{field}: unknown scheme '{s}'")),
            None => ("https", endpoint),
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!("{field}: '{endpoint}' is not HOST[:PORT]"));
        }
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        let host = host.strip_suffix(default_port).unwrap_or(host).to_owned();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(TIMEOUT)
            .build();
        Ok(JsonApi {
            agent,
            url: format!("{scheme}://{host}/"),
            host,
            region: region.to_owned(),
            service,
            target,
        })
    }

    /// `https://host[:port]/`
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// One signed call of `action` with the JSON `body`; the JSON answer (wiped when dropped:
    /// it may hold key material).
    pub(crate) fn call(
        &self,
        creds: &Credentials,
        action: &str,
        body: &[u8],
    ) -> Result<Zeroizing<String>, AwsError> {
        let date = sigv4::amz_date(crate::timefmt::now());
        let target = format!("{}.{action}", self.target);
        let mut headers = vec![
            ("content-type", "application/x-amz-json-1.1"),
            ("host", self.host.as_str()),
            ("x-amz-date", date.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        if let Some(token) = &creds.token {
            headers.push(("x-amz-security-token", token.as_str()));
        }
        let req = sigv4::Request {
            method: "POST",
            path: "/",
            headers: &headers,
            body,
        };
        let auth = sigv4::authorization(creds, &self.region, self.service, &date, &req);
        let mut request = self.agent.post(&self.url).set("Authorization", &auth);
        for (name, value) in &headers {
            request = request.set(name, value);
        }
        match request.send_bytes(body) {
            Ok(resp) => resp
                .into_string()
                .map(Zeroizing::new)
                .map_err(|e| AwsError::Transport(format!("{}: reading the answer: {e}", self.url))),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let (kind, message) = error_body(&text);
                Err(AwsError::Api {
                    status,
                    kind,
                    message,
                })
            }
            Err(ureq::Error::Transport(t)) => {
                Err(AwsError::Transport(format!("{}: {t}", self.url)))
            }
        }
    }
}

/// The exception's name and message of an error answer: JSON (`__type`, `message`), or the
/// XML of the query protocol that a gateway in front may answer with (`<Code>`,
/// `<Message>`); the message on one line.
fn error_body(text: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    let xml = |tag: &str| {
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        Some(&text[start..start + text[start..].find('<')?])
    };
    let kind = v["__type"]
        .as_str()
        .or_else(|| xml("Code"))
        .unwrap_or_default();
    // `com.amazonaws.kms#NotFoundException` or the bare name.
    let kind = kind.rsplit('#').next().unwrap_or(kind).to_owned();
    let message = v["message"]
        .as_str()
        .or(v["Message"].as_str())
        .or_else(|| xml("Message"))
        .unwrap_or(text);
    (
        kind,
        message.split_whitespace().collect::<Vec<_>>().join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let api = |e: &str| JsonApi::new(e, "r", "kms", "TrentService", "f").map(|a| a.url);
        assert_eq!(
            api("kms.eu-west-1.amazonaws.com").unwrap(),
            "https://kms.eu-west-1.amazonaws.com/"
        );
        assert_eq!(api("https://h:443/").unwrap(), "https://h/");
        assert_eq!(
            api("http://127.0.0.1:5000").unwrap(),
            "http://127.0.0.1:5000/"
        );
        assert!(api("ftp://h").unwrap_err().contains("unknown scheme 'ftp'"));
        assert!(api("http://h/path")
            .unwrap_err()
            .contains("is not HOST[:PORT]"));
    }
}

//! HTTP/1.1 framing: incremental request parsing (httparse) and response encoding.
//!
//! Nothing here knows about KES; the API layer decides what a request means.
mod parser;
mod request;
mod response;

pub(crate) use parser::{Parsed, RequestParser};
pub(crate) use request::{percent_decode, Request};
pub(crate) use response::{go_json, BodyProducer, Producer, Response};

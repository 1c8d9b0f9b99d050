//! Listings: one page (`{"names": [...], "continue_at": "..."}`), and [`Names`], every page.
//!
//! A server that pages its answer names where the next page starts in `continue_at`; the Go
//! SDK's `ListIter` then asks for the listing at that name, and so does [`Names`]. kes-rs
//! answers every listing in one page. Servers before KES v0.23 answered with ndjson lines
//! (`{"name": ...}`, `{"identity": ...}` or `{"error": ...}`), which are read as one page.
use std::collections::VecDeque;

use super::{http, Client, ClientError, List, Reply};

impl Client {
    /// One page of the listing at `route` + `prefix`.
    pub(super) fn list_page(&self, route: &str, prefix: &str) -> Result<Reply<List>, ClientError> {
        let resp = self.call(self.get_named(route, prefix))?;
        let ndjson = resp
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("application/x-ndjson"));
        if ndjson {
            let value = legacy_listing(&resp)?;
            return Ok(Reply {
                value,
                body: resp.body,
            });
        }
        Reply::decode(resp)
    }
}

/// `{"name": ...}` / `{"identity": ...}` lines; an `{"error": ...}` line fails the listing.
fn legacy_listing(resp: &http::Response) -> Result<List, ClientError> {
    let mut names = Vec::new();
    for line in resp.body.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| ClientError::Response(format!("invalid listing line: {e}")))?;
        let field = |name: &str| {
            v.get(name)
                .and_then(|f| f.as_str())
                .filter(|s| !s.is_empty())
        };
        if let Some(err) = field("error") {
            return Err(ClientError::Server(super::ApiError::new(
                resp.status,
                err.to_owned(),
            )));
        }
        if let Some(name) = field("name").or_else(|| field("identity")) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(List {
        names,
        continue_at: String::new(),
    })
}

/// Every name of a listing, page after page: an iterator of names that fetches the next page
/// when the current one is used up. Made by [`Client::keys`], [`Client::policies`],
/// [`Client::identities`], [`Client::secrets`] and [`Client::enclaves`].
///
/// An error ends the iteration after it is returned. A name is returned once even if a server
/// repeats it on the next page, and a page that brings nothing new ends the listing.
///
/// ```no_run
/// # fn run(client: &kes_node::client::Client) -> Result<(), kes_node::client::ClientError> {
/// for name in client.keys("app-") {
///     println!("{}", name?);
/// }
/// let all: Vec<String> = client.keys("*").collect::<Result<_, _>>()?;
/// # Ok(()) }
/// ```
pub struct Names<'c> {
    client: &'c Client,
    route: &'static str,
    /// What to ask for next; `None` once the last page came.
    next: Option<String>,
    page: VecDeque<String>,
    /// The greatest name returned so far (names come sorted).
    last: Option<String>,
}

impl<'c> Names<'c> {
    pub(super) fn new(client: &'c Client, route: &'static str, prefix: &str) -> Names<'c> {
        Names {
            client,
            route,
            next: Some(prefix.to_owned()),
            page: VecDeque::new(),
            last: None,
        }
    }

    fn fetch(&mut self, at: String) -> Result<(), ClientError> {
        let list = self.client.list_page(self.route, &at)?.into_inner();
        let before = self.last.clone();
        for name in list.names {
            // `None` orders before every name.
            if self.last.as_deref() < Some(name.as_str()) {
                self.last = Some(name.clone());
                self.page.push_back(name);
            }
        }
        let progressed = self.last != before;
        self.next = Some(list.continue_at).filter(|c| !c.is_empty() && *c != at && progressed);
        Ok(())
    }
}

impl Iterator for Names<'_> {
    type Item = Result<String, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.page.is_empty() {
            let at = self.next.take()?;
            if let Err(e) = self.fetch(at) {
                return Some(Err(e));
            }
        }
        self.page.pop_front().map(Ok)
    }
}

//! The server itself: version, readiness, status, routes and metrics.
use super::{Client, ClientError, Metrics, Reply, Route, Status, Version};

impl Client {
    /// The server's version (`GET /version`; Go: `Version`). Needs no authorization.
    pub fn version(&self) -> Result<Reply<Version>, ClientError> {
        self.json(self.get("/version"))
    }

    /// `Ok` if the server is ready to serve requests (`GET /v1/ready`; Go: `IsReady`). An edge
    /// server whose key store is down answers [`ClientError::Unavailable`].
    pub fn ready(&self) -> Result<(), ClientError> {
        self.empty(self.get("/v1/ready"))
    }

    /// Version, platform, uptime, memory and key store health (`GET /v1/status`; Go:
    /// `Status`).
    pub fn status(&self) -> Result<Reply<Status>, ClientError> {
        self.json(self.get("/v1/status"))
    }

    /// The routes the server serves, with their body limits and timeouts (`GET /v1/api`; Go:
    /// `APIs`).
    pub fn api(&self) -> Result<Reply<Vec<Route>>, ClientError> {
        self.json(self.get("/v1/api"))
    }

    /// The server's metrics (`GET /v1/metrics`, Prometheus text; Go: `Metrics`).
    pub fn metrics(&self) -> Result<Metrics, ClientError> {
        let resp = self.call(self.get("/v1/metrics"))?;
        Ok(Metrics::parse(&String::from_utf8_lossy(&resp.body)))
    }
}

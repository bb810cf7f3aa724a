//! Client connections and the socket that accepts them.

pub mod connection;
pub mod listener;
pub mod metrics_http;

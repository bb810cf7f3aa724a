//! Client connections.

pub mod connection;

//! The TOML config file (`--config caudal.toml`): every broker setting, with the same
//! names as the command-line flags (dashes become underscores). Flags override the file;
//! the file overrides the defaults. Unknown keys and values of the wrong type are refused
//! at start with a message naming the key.
//!
//! ```toml
//! data_dir = "/var/lib/caudal"
//! listen = "0.0.0.0:9092"
//! advertised_host = "broker1.example.com"
//! shards = 8
//! flush_interval_ms = 1000        # omit for durable (fsync before ack)
//! metrics_listen = "127.0.0.1:9644"
//! log_level = "info"
//! ```

use std::path::Path;

use crate::config::ConfigError;
// Declared, with every other setting, in `crate::config`.
pub use crate::config::FileConfig;

impl FileConfig {
    /// Parses file contents.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("config file: {e}")))
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        FileConfig::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_and_refuses_unknown_ones_by_name() {
        let c =
            FileConfig::parse("shards = 4\nlisten = \"127.0.0.1:9000\"\nflush_interval_ms = 5\n")
                .unwrap();
        assert_eq!(c.shards, Some(4));
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:9000"));
        let e = FileConfig::parse("shard = 4\n").unwrap_err().0;
        assert!(e.contains("shard"), "{e}");
        let e = FileConfig::parse("shards = \"many\"\n").unwrap_err().0;
        assert!(e.contains("shards"), "{e}");
    }
}

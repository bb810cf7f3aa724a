//! Request frames: a 4-byte big-endian size, then the request header and body.
//!
//! The size is checked before anything is allocated; then the header is read in two
//! steps: the fixed api key / version / correlation id first (enough to answer even an
//! unknown API), then the full header with the crate's decoder.

use thiserror::Error;

/// Why a frame was refused. Each of these closes the connection, as Kafka does.
#[derive(Debug, Error)]
pub enum FrameError {
    /// Declared size negative or below a request header.
    #[error("frame size {0} is invalid")]
    BadSize(i32),
    /// Declared size above `socket.request.max.bytes`.
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge {
        /// Declared size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Unknown API key.
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    /// Known API, version not supported.
    #[error("unsupported version {version} of api key {key}")]
    UnsupportedVersion {
        /// Api key.
        key: i16,
        /// Version asked for.
        version: i16,
    },
    /// Header or body did not decode.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The response could not be encoded (a broker bug).
    #[error("cannot encode response: {0}")]
    Encode(String),
}

/// Smallest request: api key, version, correlation id, client id length.
pub const MIN_REQUEST: usize = 10;

/// Checks a declared frame size against the limit, before any buffer is allocated.
pub fn check_frame_size(declared: i32, max: usize) -> Result<usize, FrameError> {
    if declared < MIN_REQUEST as i32 {
        return Err(FrameError::BadSize(declared));
    }
    let size = declared as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(size)
}

/// The fixed start of every request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    /// Api key.
    pub api_key: i16,
    /// Api version.
    pub api_version: i16,
    /// Correlation id to echo.
    pub correlation_id: i32,
}

/// Reads the api key, version and correlation id at the start of a frame.
pub fn peek_header(frame: &[u8]) -> Result<HeaderPrefix, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::BadSize(frame.len() as i32));
    }
    Ok(HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_sizes_before_allocating() {
        assert!(matches!(
            check_frame_size(-1, 100),
            Err(FrameError::BadSize(-1))
        ));
        assert!(matches!(
            check_frame_size(3, 100),
            Err(FrameError::BadSize(3))
        ));
        assert!(matches!(
            check_frame_size(i32::MAX, 100 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(check_frame_size(50, 100).ok(), Some(50));
    }
}

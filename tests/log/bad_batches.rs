use caudal::log::{LogConfig, LogError};
use caudal::protocol::record_batch::{BatchError, Compression};

use super::*;

async fn refused(log: &caudal::replica::Partition, bytes: Vec<u8>) -> BatchError {
    match log.append(BytesMut::from(&bytes[..])).await {
        Err(caudal::replica::ReplicaError::Log(LogError::InvalidBatch(e))) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn malformed_batches_are_refused_and_change_nothing() {
    run(|dir| async move {
        let log = open(&dir, LogConfig::default()).await;
        log.append(batch(3, 10, 0, 1, Compression::None))
            .await
            .unwrap();
        let good = batch(2, 10, 1, 2, Compression::None).to_vec();

        let mut crc = good.clone();
        let last = crc.len() - 1;
        crc[last] ^= 1;
        assert!(matches!(
            refused(&log, crc).await,
            BatchError::CrcMismatch { .. }
        ));

        let mut magic = good.clone();
        magic[16] = 1;
        assert_eq!(refused(&log, magic).await, BatchError::BadMagic(1));

        let truncated = good[..good.len() - 5].to_vec();
        assert!(matches!(
            refused(&log, truncated).await,
            BatchError::Truncated { .. }
        ));

        let mut lying = good.clone();
        lying[8..12].copy_from_slice(&(i32::MAX).to_be_bytes());
        assert!(matches!(
            refused(&log, lying).await,
            BatchError::Truncated { .. }
        ));

        let mut short = good.clone();
        short[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(refused(&log, short).await, BatchError::BadLength(10));

        let mut trailing = good.clone();
        trailing.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            refused(&log, trailing).await,
            BatchError::Truncated { .. }
        ));

        assert!(matches!(
            refused(&log, Vec::new()).await,
            BatchError::Truncated { .. }
        ));

        let small = open(
            &dir.join("small"),
            LogConfig {
                max_message_bytes: 100,
                ..LogConfig::default()
            },
        )
        .await;
        let big = batch(1, 200, 0, 1, Compression::None).to_vec();
        assert!(matches!(
            refused(&small, big).await,
            BatchError::TooLarge { .. }
        ));

        // Nothing moved: the next good batch lands right after the first one.
        assert_eq!(log.next_offset(), 3);
        let r = log.append(BytesMut::from(&good[..])).await.unwrap();
        assert_eq!(r.base_offset, 3);
        assert_eq!(read_all(&log, 0).await.len(), 2);
    });
}

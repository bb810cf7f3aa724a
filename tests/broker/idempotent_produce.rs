//! The handshake the Java client makes with idempotence on (its default since 3.0):
//! InitProducerId, then produces carrying producer id, epoch and sequences.

use caudal::protocol::record_batch::set_producer;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::*;

fn init(c: &mut Client, pid: i64, epoch: i16) -> InitProducerIdResponse {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch);
    c.call(ApiKey::InitProducerId, 4, &req)
}

fn idem_batch(pid: i64, epoch: i16, seq: i32, values: &[&[u8]]) -> Vec<u8> {
    let mut b = batch(values);
    set_producer(&mut b, pid, epoch, seq);
    b
}

fn code_and_offset(r: &ProduceResponse) -> (i16, i64) {
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn idempotent_produce_deduplicates_retries_and_fences_old_epochs() {
    let mut broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "idem", 1);
    let r = init(&mut c, -1, -1);
    assert_eq!(r.error_code, 0);
    let pid = r.producer_id.0;
    assert!(pid >= 0);
    assert_eq!(r.producer_epoch, 0);
    // A second producer gets a different id.
    assert_ne!(init(&mut c, -1, -1).producer_id.0, pid);

    assert_eq!(
        code_and_offset(&produce(
            &mut c,
            "idem",
            0,
            idem_batch(pid, 0, 0, &[b"a", b"b"])
        )),
        (0, 0)
    );
    assert_eq!(
        code_and_offset(&produce(&mut c, "idem", 0, idem_batch(pid, 0, 2, &[b"c"]))),
        (0, 2)
    );
    // The retry of the first batch (as after a lost response) gets its original offset.
    assert_eq!(
        code_and_offset(&produce(
            &mut c,
            "idem",
            0,
            idem_batch(pid, 0, 0, &[b"a", b"b"])
        )),
        (0, 0)
    );
    // A gap is refused with OUT_OF_ORDER_SEQUENCE_NUMBER.
    assert_eq!(
        code_and_offset(&produce(&mut c, "idem", 0, idem_batch(pid, 0, 7, &[b"x"]))).0,
        45
    );

    // The dedup state survives a restart.
    drop(c);
    broker.restart();
    let mut c = Client::connect(broker.addr(0));
    assert_eq!(
        code_and_offset(&produce(&mut c, "idem", 0, idem_batch(pid, 0, 2, &[b"c"]))),
        (0, 2)
    );
    assert_eq!(
        code_and_offset(&produce(&mut c, "idem", 0, idem_batch(pid, 0, 3, &[b"d"]))),
        (0, 3)
    );

    // Re-initialising with the current id and epoch bumps the epoch (KIP-360); the old
    // epoch is then fenced with INVALID_PRODUCER_EPOCH.
    let bumped = init(&mut c, pid, 0);
    assert_eq!(
        (
            bumped.error_code,
            bumped.producer_id.0,
            bumped.producer_epoch
        ),
        (0, pid, 1)
    );
    assert_eq!(
        code_and_offset(&produce(&mut c, "idem", 0, idem_batch(pid, 1, 0, &[b"e"]))),
        (0, 4)
    );
    assert_eq!(
        code_and_offset(&produce(&mut c, "idem", 0, idem_batch(pid, 0, 4, &[b"z"]))).0,
        47
    );

    // Producer ids are never reused after a restart.
    drop(c);
    broker.restart();
    let mut c = Client::connect(broker.addr(0));
    let fresh = init(&mut c, -1, -1).producer_id.0;
    assert_ne!(fresh, pid);
}

//! InitProducerId: a producer id and epoch for an idempotent producer.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;

/// Handles InitProducerId. Transactional ids are refused (transactions are not
/// supported); a producer that presents its current id and epoch (KIP-360, v3+) gets the
/// epoch bumped, which fences its older incarnations.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refuse = |code: ErrorCode| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.is_empty())
    {
        return refuse(ErrorCode::InvalidRequest);
    }
    if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX - 1
    {
        return InitProducerIdResponse::default()
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    match ctx.allocate_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(code) => refuse(code),
    }
}

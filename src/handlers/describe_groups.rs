//! DescribeGroups: state, protocol and members of groups this ctx coordinates.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{GROUP_OPERATIONS, OPERATIONS_NOT_REQUESTED};
use crate::dispatch::context::RequestContext;

fn s(v: String) -> StrBytes {
    StrBytes::from_string(v)
}

/// Handles DescribeGroups.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let version = ctx.header.request_api_version;
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let base = DescribedGroup::default().with_group_id(id.clone());
            let ops = if request.include_authorized_operations {
                GROUP_OPERATIONS
            } else {
                OPERATIONS_NOT_REQUESTED
            };
            let base = if version >= 3 {
                base.with_authorized_operations(ops)
            } else {
                base
            };
            match ctx.coordinator_for(id.as_str()) {
                Err(code) => base
                    .with_error_code(code.code())
                    .with_group_state(StrBytes::from_static_str("Dead")),
                Ok(c) => {
                    let d = c.describe(id.as_str());
                    base.with_group_state(StrBytes::from_static_str(d.state))
                        .with_protocol_type(s(d.protocol_type))
                        .with_protocol_data(s(d.protocol))
                        .with_members(
                            d.members
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_id(s(m.member_id))
                                        .with_group_instance_id(if version >= 4 {
                                            m.instance_id.map(s)
                                        } else {
                                            None
                                        })
                                        .with_client_id(s(m.client_id))
                                        .with_client_host(s(m.client_host))
                                        .with_member_metadata(m.metadata)
                                        .with_member_assignment(m.assignment)
                                })
                                .collect(),
                        )
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

//! Results straight from the workers (`workers.client_endpoints`): when a query's
//! root is a fragment whose partitions need no merge on the coordinator (no
//! `ORDER BY` or `LIMIT` across them, no operator above them), its Flight SQL
//! `FlightInfo` lists one endpoint per partition, each at the worker that runs it
//! with a ticket sealed for that worker. A client fetches the endpoints, in
//! parallel if it likes, and no result byte passes through the coordinator.
//!
//! The seal is the client's authorization on the worker (it has no cluster call
//! token): the plan inside was planned with the user's access rules, and nothing
//! of it can be changed without breaking the seal. It expires after
//! [`CLIENT_TICKET_TTL`].

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::FlightEndpoint;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::ExecutionPlan;

use super::RemoteFragmentExec;

/// How long a client may take to fetch (or fetch again) an endpoint it was handed.
pub const CLIENT_TICKET_TTL: Duration = Duration::from_secs(300);

/// The endpoints of `plan`'s partitions on their workers, or None when the plan
/// needs the coordinator to produce its result.
pub fn client_endpoints(
    plan: &Arc<dyn ExecutionPlan>,
    query_id: &str,
) -> Option<Vec<FlightEndpoint>> {
    let root = root_fragment(plan)?;
    let tickets = root
        .client_tickets(query_id, CLIENT_TICKET_TTL)
        .filter(|t| !t.is_empty())?;
    Some(
        tickets
            .into_iter()
            .map(|(address, ticket)| {
                FlightEndpoint::new()
                    .with_ticket(ticket)
                    .with_location(flight_uri(&address))
            })
            .collect(),
    )
}

/// The fragment whose partitions are the result: the root itself, or the root
/// under a merge that only concatenates (no fetch).
pub(super) fn root_fragment(plan: &Arc<dyn ExecutionPlan>) -> Option<&RemoteFragmentExec> {
    let mut node = plan;
    if let Some(merge) = node.as_ref().downcast_ref::<CoalescePartitionsExec>() {
        if merge.fetch().is_some() {
            return None;
        }
        node = merge.input();
    }
    node.as_ref().downcast_ref::<RemoteFragmentExec>()
}

/// A worker's address (`http://host:port`) as a Flight location (`grpc+tcp://host:port`).
fn flight_uri(address: &str) -> String {
    match (
        address.strip_prefix("http://"),
        address.strip_prefix("https://"),
    ) {
        (Some(rest), _) => format!("grpc+tcp://{rest}"),
        (_, Some(rest)) => format!("grpc+tls://{rest}"),
        _ => format!("grpc+tcp://{address}"),
    }
}

#[cfg(test)]
mod tests {
    use super::flight_uri;

    #[test]
    fn worker_addresses_become_flight_locations() {
        assert_eq!(
            flight_uri("http://10.0.0.5:50061"),
            "grpc+tcp://10.0.0.5:50061"
        );
        assert_eq!(flight_uri("https://w1:50061"), "grpc+tls://w1:50061");
        assert_eq!(flight_uri("w1:50061"), "grpc+tcp://w1:50061");
    }
}

//! `hansa federators list|add|remove`: the control plane's Raft membership.

use hansa_proto::v1::admin_client::AdminClient;
use hansa_proto::v1::{AddFederatorRequest, ListFederatorsRequest, RemoveFederatorRequest};
use serde::Serialize;
use tonic::transport::Channel;

use crate::client::status_error;
use crate::output::{print, Format, Table};

#[derive(Serialize)]
struct FederatorRow {
    id: u64,
    address: String,
    role: String,
    voter: bool,
    term: u64,
    last_applied: u64,
    lag: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

pub async fn list(channel: Channel, format: Format) -> anyhow::Result<()> {
    let response = AdminClient::new(channel)
        .list_federators(ListFederatorsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let rows: Vec<FederatorRow> = response
        .federators
        .into_iter()
        .map(|f| FederatorRow {
            id: f.id,
            address: f.address,
            role: f.role,
            voter: f.voter,
            term: f.term,
            last_applied: f.last_applied,
            lag: f.lag,
            error: f.error,
        })
        .collect();
    print(format, &rows, || {
        let mut table = Table::new(&["ID", "ADDRESS", "ROLE", "VOTER", "TERM", "APPLIED", "LAG"]);
        for r in &rows {
            let unreachable = r.role == "unreachable";
            let number = |n: u64| {
                if unreachable {
                    "-".to_string()
                } else {
                    n.to_string()
                }
            };
            table.row(vec![
                r.id.to_string(),
                r.address.clone(),
                if unreachable {
                    format!("unreachable ({})", r.error)
                } else {
                    r.role.clone()
                },
                if r.voter { "yes" } else { "no" }.into(),
                number(r.term),
                number(r.last_applied),
                number(r.lag),
            ]);
        }
        table.render()
    })
}

pub async fn add(channel: Channel, id: u64, address: &str, learner: bool) -> anyhow::Result<()> {
    AdminClient::new(channel)
        .add_federator(AddFederatorRequest {
            id,
            address: address.to_string(),
            learner_only: learner,
        })
        .await
        .map_err(status_error)?;
    if learner {
        println!("federator {id} added as a learner");
    } else {
        println!("federator {id} added as a voter");
    }
    Ok(())
}

pub async fn remove(channel: Channel, id: u64) -> anyhow::Result<()> {
    AdminClient::new(channel)
        .remove_federator(RemoveFederatorRequest { id })
        .await
        .map_err(status_error)?;
    println!("federator {id} removed");
    Ok(())
}

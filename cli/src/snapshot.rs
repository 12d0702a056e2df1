//! `hansa snapshot save FILE`: a backup of the whole federation state.

use std::path::Path;

use anyhow::Context as _;
use hansa_proto::v1::admin_client::AdminClient;
use hansa_proto::v1::SaveSnapshotRequest;
use tonic::transport::Channel;

use crate::client::status_error;

/// Large enough for a whole federation state.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

pub async fn save(channel: Channel, file: &Path) -> anyhow::Result<()> {
    let response = AdminClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .save_snapshot(SaveSnapshotRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    // Written beside the target first, so a crash never leaves half a backup under its name.
    let tmp = file.with_extension("partial");
    std::fs::write(&tmp, &response.data).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("write {}", file.display()))?;
    println!(
        "saved the federation state as of log index {} to {} ({} bytes)",
        response.last_applied,
        file.display(),
        response.data.len()
    );
    Ok(())
}

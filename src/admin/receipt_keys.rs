//! `vela admin receipt-key`: the keys the controller manages to sign receipt handles (ADR
//! 0030). Their secrets never leave the cluster; this shows ids, ages and which one signs.

use std::fmt::Write as _;

use clap::Subcommand;
use serde_json::json;
use vela_proto::pb::admin as pb;

use super::{AdminClient, OutputFormat, format_ms, status_error};

#[derive(Subcommand, Debug)]
pub enum ReceiptKeyCommand {
    /// The keys (made on first use), the one that signs new handles marked.
    List,
    /// Adds a new random key that signs new handles from now on; the others still verify the
    /// handles they signed. Rotate regularly, or at once if a key may have leaked.
    Rotate,
    /// Removes a key that no longer signs. Refused within 12 h of the rotation that replaced
    /// it (handles it signed may be held by consumers that long) unless --force.
    Retire {
        id: u32,
        /// Retire it even if handles it signed may still be in use (their acks then fail
        /// and those messages are delivered again).
        #[arg(long)]
        force: bool,
    },
}

/// What `receipt-key retire` asks to confirm.
pub(super) fn destructive(command: &ReceiptKeyCommand) -> Option<String> {
    match command {
        ReceiptKeyCommand::Retire { id, force } => Some(format!(
            "retire receipt key {id}{}",
            if *force {
                " even though handles it signed may still be in use"
            } else {
                ""
            }
        )),
        _ => None,
    }
}

pub(super) async fn execute(
    client: &mut AdminClient,
    command: ReceiptKeyCommand,
    output: OutputFormat,
) -> anyhow::Result<String> {
    let (keys, done) = match command {
        ReceiptKeyCommand::List => (
            client
                .list_receipt_keys(pb::ListReceiptKeysRequest {})
                .await
                .map_err(status_error)?
                .into_inner(),
            None,
        ),
        ReceiptKeyCommand::Rotate => (
            client
                .rotate_receipt_key(pb::RotateReceiptKeyRequest {})
                .await
                .map_err(status_error)?
                .into_inner(),
            Some("rotated: new receipt handles are signed with the new key".to_owned()),
        ),
        ReceiptKeyCommand::Retire { id, force } => (
            client
                .retire_receipt_key(pb::RetireReceiptKeyRequest { id, force })
                .await
                .map_err(status_error)?
                .into_inner(),
            Some(format!("receipt key {id} retired")),
        ),
    };
    if output == OutputFormat::Json {
        let keys: Vec<_> = keys
            .keys
            .iter()
            .map(|k| {
                json!({
                    "id": k.id,
                    "created_at": format_ms(k.created_ms),
                    "signing": k.signing,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&keys)? + "\n");
    }
    let mut out = String::new();
    if let Some(done) = done {
        writeln!(out, "{done}")?;
    }
    writeln!(out, "{:<10} {:<26} SIGNING", "ID", "CREATED")?;
    for k in &keys.keys {
        writeln!(
            out,
            "{:<10} {:<26} {}",
            k.id,
            format_ms(k.created_ms),
            if k.signing { "yes" } else { "" }
        )?;
    }
    Ok(out)
}

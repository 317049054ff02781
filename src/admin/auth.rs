//! `vela admin user …` and `vela admin acl …`: users and ACLs (ADR 0019; README "Securing
//! Vela"). Only SUPER users may run these on a server with auth on. Passwords are sent, never
//! shown.

use std::fmt::Write as _;

use anyhow::Context;
use clap::Subcommand;
use vela_proto::auth::{Decision, UserStatus, UserType};
use vela_proto::pb::admin as pb;
use vela_proto::pb::auth as auth_pb;

use super::{OutputFormat, Target, connect, status_error};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user: its name is the access key, its password the secret key clients sign with.
    Create {
        name: String,
        /// The password (visible in `ps` and shell history: prefer --password-stdin).
        #[arg(
            long,
            required_unless_present = "password_stdin",
            conflicts_with = "password_stdin"
        )]
        password: Option<Secret>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// super (may do everything) | normal (what its ACL allows)
        #[arg(long = "type", default_value = "normal", value_parser = parse_user_type)]
        user_type: UserType,
    },
    /// Change a user's password, type or status.
    Update {
        name: String,
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<Secret>,
        /// Read the new password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long = "type", value_parser = parse_user_type)]
        user_type: Option<UserType>,
        /// enable | disable (a disabled user cannot authenticate)
        #[arg(long, value_parser = parse_user_status)]
        status: Option<UserStatus>,
    },
    /// Delete a user and its ACL.
    Delete {
        name: String,
    },
    List,
    Show {
        name: String,
    },
}

/// The entries an `acl create` or `acl update` adds to a subject's ACL.
#[derive(clap::Args, Debug)]
pub struct AclEntryArgs {
    /// `User:<name>`.
    #[arg(long)]
    subject: String,
    /// `Topic:orders`, `Topic:order*`, `Group:*`, `Cluster:*` or `*` (repeat for several).
    #[arg(long, required = true)]
    resource: Vec<String>,
    /// PUB, SUB, CREATE, UPDATE, DELETE, GET, LIST, ALL (comma-separated).
    #[arg(long)]
    actions: String,
    /// allow | deny
    #[arg(long, value_parser = parse_decision)]
    decision: Decision,
    /// Only from these addresses or CIDR blocks (repeat or comma-separate).
    #[arg(long = "source-ip", value_delimiter = ',')]
    source_ips: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Add entries to a subject's ACL (created if it has none); an entry replaces the one of
    /// the same resource and source IPs.
    Create(AclEntryArgs),
    /// As create, for a subject that has an ACL already.
    Update(AclEntryArgs),
    /// Remove a subject's entries for the resources given, or its whole ACL.
    Delete {
        #[arg(long)]
        subject: String,
        #[arg(long)]
        resource: Vec<String>,
    },
    List {
        /// Only this subject.
        #[arg(long)]
        subject: Option<String>,
        /// Only entries of this resource pattern.
        #[arg(long)]
        resource: Option<String>,
    },
    Show {
        #[arg(long)]
        subject: String,
    },
}

/// A secret given on the command line: `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// The secret `given` on the command line, or (`stdin`) the first line of standard input;
/// `what` names it in errors.
pub(super) fn secret_from(
    given: Option<Secret>,
    stdin: bool,
    what: &str,
) -> anyhow::Result<Option<String>> {
    if !stdin {
        return Ok(given.map(|s| s.0));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let secret = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!secret.is_empty(), "standard input held no {what}");
    Ok(Some(secret))
}

fn parse_user_type(s: &str) -> Result<UserType, String> {
    s.parse().map_err(|e: vela_proto::auth::AuthValueError| e.0)
}

fn parse_user_status(s: &str) -> Result<UserStatus, String> {
    match s.to_ascii_lowercase().as_str() {
        "enable" | "enabled" => Ok(UserStatus::Enabled),
        "disable" | "disabled" => Ok(UserStatus::Disabled),
        _ => Err(format!("{s:?} is not enable or disable")),
    }
}

fn parse_decision(s: &str) -> Result<Decision, String> {
    s.parse().map_err(|e: vela_proto::auth::AuthValueError| e.0)
}

/// With `--output json`: `list` and `show` an array of users, `create` and `update` the user
/// (`name`, `type`, `status`; never a password), `delete` `{"deleted": {"user": NAME}}`.
pub(super) async fn user(server: &Target, command: UserCommand) -> anyhow::Result<String> {
    let output = server.output;
    let mut client = connect(server).await?;
    let mut out = String::new();
    match command {
        UserCommand::Create {
            name,
            password,
            password_stdin,
            user_type,
        } => {
            let password = secret_from(password, password_stdin, "password")?
                .context("give --password or --password-stdin")?;
            let user = client
                .create_user(auth_pb::User {
                    name,
                    password,
                    user_type: user_type.to_string(),
                    status: UserStatus::Enabled.to_string(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if output == OutputFormat::Json {
                return super::json_line(&user_json(&user));
            }
            writeln!(out, "created user {} ({})", user.name, user.user_type)?;
        }
        UserCommand::Update {
            name,
            password,
            password_stdin,
            user_type,
            status,
        } => {
            let password = secret_from(password, password_stdin, "password")?;
            let user = client
                .update_user(auth_pb::UserUpdate {
                    name,
                    password,
                    user_type: user_type.map(|t| t.to_string()),
                    status: status.map(|s| s.to_string()),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if output == OutputFormat::Json {
                return super::json_line(&user_json(&user));
            }
            writeln!(
                out,
                "updated user {} ({}, {})",
                user.name, user.user_type, user.status
            )?;
        }
        UserCommand::Delete { name } => {
            client
                .delete_user(pb::DeleteUserRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            if output == OutputFormat::Json {
                return super::deleted_json("user", &name);
            }
            writeln!(out, "deleted user {name} and its ACL")?;
        }
        UserCommand::List => {
            let users = list_users(&mut client, String::new()).await?;
            print_users(&mut out, &users, output)?;
        }
        UserCommand::Show { name } => {
            let users = list_users(&mut client, name).await?;
            print_users(&mut out, &users, output)?;
        }
    }
    Ok(out)
}

async fn list_users(
    client: &mut super::AdminClient,
    name: String,
) -> anyhow::Result<Vec<auth_pb::User>> {
    Ok(client
        .list_users(pb::ListUsersRequest { name })
        .await
        .map_err(status_error)?
        .into_inner()
        .users)
}

fn print_users(
    out: &mut String,
    users: &[auth_pb::User],
    output: OutputFormat,
) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        let rows: Vec<serde_json::Value> = users.iter().map(user_json).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    writeln!(out, "{:<32} {:<8} STATUS", "NAME", "TYPE")?;
    for u in users {
        writeln!(out, "{:<32} {:<8} {}", u.name, u.user_type, u.status)?;
    }
    Ok(())
}

fn user_json(u: &auth_pb::User) -> serde_json::Value {
    serde_json::json!({"name": u.name, "type": u.user_type, "status": u.status})
}

fn acl_json(a: &auth_pb::Acl) -> serde_json::Value {
    serde_json::json!({
        "subject": a.subject,
        "entries": a.entries.iter().map(|e| serde_json::json!({
            "resource": e.resource,
            "actions": e.actions,
            "source_ips": e.source_ips,
            "decision": e.decision,
        })).collect::<Vec<_>>(),
    })
}

fn entries_of(args: AclEntryArgs) -> auth_pb::Acl {
    let actions: Vec<String> = args
        .actions
        .split(',')
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    auth_pb::Acl {
        subject: args.subject,
        entries: args
            .resource
            .into_iter()
            .map(|resource| auth_pb::PolicyEntry {
                resource,
                actions: actions.clone(),
                source_ips: args.source_ips.clone(),
                decision: args.decision.to_string(),
            })
            .collect(),
    }
}

/// With `--output json`: `list` and `show` an array of ACLs, `create` and `update` the
/// subject's whole ACL, `delete` `{"deleted": {"acl": SUBJECT, "resources": [...]}}` (no
/// resources: the whole ACL).
pub(super) async fn acl(server: &Target, command: AclCommand) -> anyhow::Result<String> {
    let output = server.output;
    let mut client = connect(server).await?;
    let mut out = String::new();
    match command {
        AclCommand::Create(args) => {
            let acl = put(&mut client, args, true).await?;
            if output == OutputFormat::Json {
                return super::json_line(&acl_json(&acl));
            }
            writeln!(
                out,
                "ACL of {} has {} entries",
                acl.subject,
                acl.entries.len()
            )?;
        }
        AclCommand::Update(args) => {
            let acl = put(&mut client, args, false).await?;
            if output == OutputFormat::Json {
                return super::json_line(&acl_json(&acl));
            }
            writeln!(
                out,
                "ACL of {} has {} entries",
                acl.subject,
                acl.entries.len()
            )?;
        }
        AclCommand::Delete { subject, resource } => {
            let whole = resource.is_empty();
            client
                .delete_acl(auth_pb::DeleteAcl {
                    subject: subject.clone(),
                    resources: resource.clone(),
                })
                .await
                .map_err(status_error)?;
            if output == OutputFormat::Json {
                return super::json_line(&serde_json::json!({
                    "deleted": { "acl": subject, "resources": resource },
                }));
            }
            if whole {
                writeln!(out, "deleted the ACL of {subject}")?;
            } else {
                writeln!(out, "deleted entries of the ACL of {subject}")?;
            }
        }
        AclCommand::List { subject, resource } => {
            let acls = list_acls(&mut client, subject.unwrap_or_default(), resource).await?;
            print_acls(&mut out, &acls, output)?;
        }
        AclCommand::Show { subject } => {
            let acls = list_acls(&mut client, subject, None).await?;
            print_acls(&mut out, &acls, output)?;
        }
    }
    Ok(out)
}

async fn put(
    client: &mut super::AdminClient,
    args: AclEntryArgs,
    create: bool,
) -> anyhow::Result<auth_pb::Acl> {
    client
        .put_acl(auth_pb::PutAcl {
            acl: Some(entries_of(args)),
            create,
        })
        .await
        .map_err(status_error)
        .map(tonic::Response::into_inner)
}

async fn list_acls(
    client: &mut super::AdminClient,
    subject: String,
    resource: Option<String>,
) -> anyhow::Result<Vec<auth_pb::Acl>> {
    Ok(client
        .list_acls(pb::ListAclsRequest {
            subject,
            resource: resource.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .acls)
}

fn print_acls(out: &mut String, acls: &[auth_pb::Acl], output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        let rows: Vec<serde_json::Value> = acls.iter().map(acl_json).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:<28} {:<20} {:<8} SOURCE_IPS",
        "SUBJECT", "RESOURCE", "ACTIONS", "DECISION"
    )?;
    for a in acls {
        for e in &a.entries {
            let ips = if e.source_ips.is_empty() {
                "*".to_owned()
            } else {
                e.source_ips.join(",")
            };
            writeln!(
                out,
                "{:<24} {:<28} {:<20} {:<8} {ips}",
                a.subject,
                e.resource,
                e.actions.join(","),
                e.decision
            )?;
        }
    }
    Ok(())
}

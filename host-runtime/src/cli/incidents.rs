//! `sigil incidents list|export`: incidents in the registry's database, read by a registry
//! identity (reviewer, auditor or admin to list; auditor or admin to export).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use guard_core::time::Timestamp;
use guard_core::Level;

use super::registry::Access;
use crate::incidents::{self, IncidentFilter, IncidentStatus, IncidentStore};
use crate::registry::Role;
use crate::store::StoreSpec;

#[derive(Debug, clap::Subcommand)]
pub enum IncidentsCommand {
    /// List incidents, newest first (reviewer, auditor or admin).
    List(ListArgs),
    /// Print one incident with its comments and quarantined items, as JSON (reviewer, auditor
    /// or admin).
    Show(ShowArgs),
    /// Write incidents and detections as OCSF-style JSON Lines for a SIEM (auditor or admin).
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    at: Access,
    /// Only incidents in this state: open, acknowledged or resolved.
    #[arg(long, value_parser = parse_status)]
    status: Option<IncidentStatus>,
    /// Only incidents of this level or higher.
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    min_level: Option<Level>,
    /// At most this many.
    #[arg(long, default_value_t = incidents::DEFAULT_PAGE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(incidents::MAX_PAGE)))]
    limit: u32,
    /// Print JSON (one page, with `next_cursor`) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    at: Access,
    /// The incident's id (`inc_…`).
    id: String,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    at: Access,
    /// Only what changed at or after this time (RFC 3339 UTC).
    #[arg(long, value_name = "RFC3339")]
    since: Option<String>,
    /// Where to write: a file (created owner-only) or `-` for standard output.
    #[arg(long, value_name = "FILE", default_value = "-")]
    out: OsString,
    /// The behaviour store whose detections are exported. Without it, the registry's database.
    #[arg(long, value_name = "SPEC")]
    store: Option<StoreSpec>,
    /// Export incidents only.
    #[arg(long)]
    no_detections: bool,
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::ALL
        .into_iter()
        .find(|l| l.as_str() == s)
        .ok_or_else(|| "a level is very_low, low, medium, high or critical".to_string())
}

fn parse_status(s: &str) -> Result<IncidentStatus, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| "a status is open, acknowledged or resolved".to_string())
}

pub fn run(command: IncidentsCommand) -> Result<ExitCode> {
    match command {
        IncidentsCommand::List(args) => list(args),
        IncidentsCommand::Show(args) => show(args),
        IncidentsCommand::Export(args) => export(args),
    }
}

fn list(args: ListArgs) -> Result<ExitCode> {
    let (registry, session) = args.at.session()?;
    registry.authorize(
        &session,
        &[Role::Reviewer, Role::Auditor, Role::Admin],
        "list incidents",
    )?;
    let db = args.at.db();
    let store =
        IncidentStore::open(&db).with_context(|| format!("cannot open `{}`", db.display()))?;
    let filter = IncidentFilter {
        status: args.status,
        min_level: args.min_level,
        limit: Some(args.limit),
        ..IncidentFilter::default()
    };
    let page = store.with_conn(|conn| incidents::list_incidents(conn, &filter))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    if page.items.is_empty() {
        outln!("no incidents");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<36}  {:<8}  {:<12}  {:>6}  {:<20}  rule",
        "id",
        "level",
        "status",
        "count",
        "last seen"
    );
    for i in &page.items {
        outln!(
            "{:<36}  {:<8}  {:<12}  {:>6}  {:<20}  {}",
            i.id,
            i.level.as_str(),
            i.status.as_str(),
            i.count,
            i.last_seen,
            i.rule.escape_debug()
        );
    }
    if page.next_cursor.is_some() {
        outln!("(more: raise --limit or use --json for the cursor)");
    }
    Ok(ExitCode::SUCCESS)
}

fn show(args: ShowArgs) -> Result<ExitCode> {
    let (registry, session) = args.at.session()?;
    registry.authorize(
        &session,
        &[Role::Reviewer, Role::Auditor, Role::Admin],
        "read incidents",
    )?;
    let db = args.at.db();
    let store =
        IncidentStore::open(&db).with_context(|| format!("cannot open `{}`", db.display()))?;
    let detail = store.with_conn(|conn| incidents::get_incident(conn, &args.id))?;
    outln!("{}", serde_json::to_string_pretty(&detail)?);
    Ok(ExitCode::SUCCESS)
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(Timestamp::parse)
        .transpose()
        .context("--since")?;
    let (registry, session) = args.at.session()?;
    registry.authorize(&session, &[Role::Auditor, Role::Admin], "export incidents")?;
    let db = args.at.db();
    let store =
        IncidentStore::open(&db).with_context(|| format!("cannot open `{}`", db.display()))?;
    let detections = if args.no_detections {
        None
    } else {
        let spec = args.store.clone().unwrap_or(StoreSpec::Sqlite(db.clone()));
        Some(
            crate::store::open(&spec)
                .with_context(|| format!("cannot open the behaviour store `{spec}`"))?,
        )
    };
    let mut out: Box<dyn std::io::Write> = if args.out == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let path = PathBuf::from(&args.out);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        // User ids are in the export.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        Box::new(std::io::BufWriter::new(
            options
                .open(&path)
                .with_context(|| format!("cannot write `{}`", path.display()))?,
        ))
    };
    let counts = store
        .with_conn(|conn| incidents::export_jsonl(conn, detections.as_deref(), since, &mut out))?;
    eprintln!(
        "exported {} incidents and {} detections",
        counts.incidents, counts.detections
    );
    Ok(ExitCode::SUCCESS)
}

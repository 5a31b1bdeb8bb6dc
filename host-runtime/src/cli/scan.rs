//! `sigil scan`: text, a file, stdin, or JSON Lines.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use guard_core::AssessmentOutput;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::users::BehaviourArgs;
use super::{parallel_map, read_bytes, utf8, GuardOptions};
use crate::engine::GuardEngine;
use crate::store::assess_with_store;

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Text to scan. Without it (and without --file or --jsonl), standard input.
    text: Option<String>,
    /// Scan the contents of a file.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["text", "jsonl"])]
    file: Option<PathBuf>,
    /// Scan JSON Lines with a `text` field (`-` for standard input); one assessment per line.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["text", "store"])]
    jsonl: Option<PathBuf>,
    /// Print guard-core's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    guard: GuardOptions,
    /// The user the text comes from: with `--store`, assessed with their stored profile, which
    /// is then updated.
    #[arg(long, value_name = "ID", conflicts_with = "jsonl")]
    user: Option<String>,
    /// The user's tenant.
    #[arg(long, value_name = "ID", requires = "user")]
    tenant: Option<String>,
    #[command(flatten)]
    behaviour: BehaviourArgs,
}

/// The assessment half of the guard's answer, kept as the exact bytes the guard wrote.
#[derive(Deserialize)]
struct RawOutput<'a> {
    #[serde(borrow)]
    assessment: &'a RawValue,
}

pub fn run(args: ScanArgs) -> Result<ExitCode> {
    let engine = args.guard.engine()?;
    let now = args.guard.now()?;
    if let Some(path) = &args.jsonl {
        return scan_jsonl(&engine, path, &now);
    }
    let text = match (&args.text, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => utf8(
            read_bytes(path, "file")?,
            &format!("file `{}`", path.display()),
        )?,
        (None, None) => {
            let mut bytes = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            utf8(bytes, "standard input")?
        }
    };
    let json = match (args.behaviour.open()?, &args.user) {
        (Some(behaviour), Some(_)) => {
            let input = guard_core::AssessmentInput {
                segments: vec![guard_core::Segment::untrusted(text)],
                context: guard_core::Context {
                    tenant: args.tenant.clone(),
                    user: args.user.clone(),
                    now: now.clone(),
                    profile: None,
                },
            };
            let clock = guard_core::time::Timestamp::parse(&now)?;
            assess_with_store(&engine, &behaviour, &input, clock)?
        }
        (Some(_), None) => anyhow::bail!("--store keeps profiles per user: name one with --user"),
        (None, _) => engine.assess_text(&text, &now)?,
    };
    let output: AssessmentOutput =
        serde_json::from_str(&json).context("the guard's answer is not the contract's shape")?;
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{json}")?;
    } else {
        print_table(&mut out, &output)?;
    }
    Ok(exit_code(output.assessment.action.stops()))
}

fn exit_code(stopped: bool) -> ExitCode {
    if stopped {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub(super) fn print_table(out: &mut impl Write, output: &AssessmentOutput) -> io::Result<()> {
    let a = &output.assessment;
    writeln!(out, "level     {} (score {:.4})", a.level.as_str(), a.score)?;
    writeln!(out, "action    {}", a.action.as_str())?;
    writeln!(out, "why       {}", a.explanation.summary)?;
    if a.findings.is_empty() {
        writeln!(out, "findings  none")?;
    } else {
        writeln!(out, "findings  {}", a.findings.len())?;
        for f in &a.findings {
            let mut undone: Vec<String> = f
                .obfuscations
                .iter()
                .map(|o| format!("{o:?}"))
                .chain(f.encodings.iter().map(|e| format!("{e:?}")))
                .collect();
            undone.dedup();
            let undone = if undone.is_empty() {
                String::new()
            } else {
                format!(" [undid {}]", undone.join(", ").to_lowercase())
            };
            writeln!(
                out,
                "  {:<44} {:<25} {:.2}  seg {} bytes {}..{}{}",
                f.id,
                f.category.as_str(),
                f.weight,
                f.span.segment,
                f.span.byte_start,
                f.span.byte_end,
                undone
            )?;
            writeln!(out, "      {:?}", f.excerpt)?;
        }
    }
    for e in &a.errors {
        writeln!(out, "note      {}: {}", e.code, e.message)?;
    }
    Ok(())
}

/// Only the action, to set the exit code without parsing the whole assessment.
#[derive(Deserialize)]
struct Decided {
    action: guard_core::Action,
}

#[derive(Deserialize)]
struct Line {
    /// Present-but-null is kept apart from missing.
    #[serde(default, deserialize_with = "present")]
    text: Option<serde_json::Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

fn error_line(line: usize, code: &str, message: &str) -> String {
    serde_json::json!({"error": {"line": line, "code": code, "message": message}}).to_string()
}

/// What one input line asks for: a text to assess, or the error that line gets instead.
type LineRequest = Result<String, (&'static str, String)>;

/// Lines are assessed in batches, in parallel, and written in input order.
const BATCH_LINES: usize = 512;
const BATCH_BYTES: usize = 16 << 20;

/// Longest line read; the rest of a longer line is skipped and the line gets an error.
const MAX_LINE_BYTES: usize = 64 << 20;

fn parse_line(buffer: &[u8], first: bool) -> LineRequest {
    let line = std::str::from_utf8(buffer)
        .map_err(|e| {
            (
                "invalid_utf8",
                format!(
                    "not valid UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )
        })?
        .trim_end_matches(['\n', '\r']);
    // A byte-order mark may open a file, and only the file.
    let line = if first {
        line.strip_prefix('\u{feff}').unwrap_or(line)
    } else {
        line
    };
    if line.trim().is_empty() {
        return Err(("empty_line", "the line is empty".into()));
    }
    if !line.trim_start().starts_with('{') {
        return Err(("invalid_line", "the line is not a JSON object".into()));
    }
    match serde_json::from_str::<Line>(line) {
        Ok(Line {
            text: Some(serde_json::Value::String(text)),
        }) => Ok(text),
        Ok(Line { text: Some(_) }) => Err(("invalid_text", "`text` is not a string".into())),
        Ok(Line { text: None }) => Err(("missing_text", "the object has no `text` field".into())),
        Err(e) => Err(("invalid_json", e.to_string())),
    }
}

/// Reads one line of at most [`MAX_LINE_BYTES`]; a longer one is consumed to its end and
/// reported. Returns the bytes read, 0 at the end of input.
fn read_line(input: &mut dyn BufRead, buffer: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    let read = input
        .take(MAX_LINE_BYTES as u64)
        .read_until(b'\n', buffer)?;
    if read < MAX_LINE_BYTES || buffer.last() == Some(&b'\n') {
        return Ok((read, false));
    }
    let mut skipped = read;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                skipped += at + 1;
                break;
            }
            None => {
                let len = chunk.len();
                input.consume(len);
                skipped += len;
            }
        }
    }
    Ok((skipped, true))
}

/// One answer per input line, in order. A bad line gets an error object and the run goes on.
///
/// Exit code: 2 if any line could not be assessed, else 1 if any was stopped, else 0.
fn scan_jsonl(engine: &GuardEngine, path: &PathBuf, now: &str) -> Result<ExitCode> {
    let mut input: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        Box::new(BufReader::new(
            File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?,
        ))
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let (mut stopped, mut failed) = (false, false);
    let mut buffer = Vec::new();
    let mut first_line = 1usize;
    let mut batch: Vec<LineRequest> = Vec::new();
    let mut batch_bytes = 0usize;
    loop {
        buffer.clear();
        let (read, too_long) = read_line(&mut *input, &mut buffer)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        if read > 0 {
            batch_bytes += buffer.len();
            batch.push(if too_long {
                Err((
                    "line_too_long",
                    format!("the line is over {MAX_LINE_BYTES} bytes"),
                ))
            } else {
                parse_line(&buffer, first_line + batch.len() == 1)
            });
        }
        if batch.is_empty() || (read > 0 && batch.len() < BATCH_LINES && batch_bytes < BATCH_BYTES)
        {
            if read == 0 {
                break;
            }
            continue;
        }
        let answers = parallel_map(&batch, |request| match request {
            Ok(text) => engine
                .assess_text(text, now)
                .map_err(|e| (e.code(), e.to_string())),
            Err((code, message)) => Err((*code, message.clone())),
        });
        for (offset, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(json) => {
                    let raw: RawOutput<'_> = serde_json::from_str(&json)
                        .context("the guard's answer is not the contract's shape")?;
                    let decided: Decided = serde_json::from_str(raw.assessment.get())
                        .context("the guard's answer is not the contract's shape")?;
                    stopped |= decided.action.stops();
                    writeln!(out, "{}", raw.assessment.get())?;
                }
                Err((code, message)) => {
                    failed = true;
                    writeln!(out, "{}", error_line(first_line + offset, code, &message))?;
                }
            }
        }
        first_line += batch.len();
        batch.clear();
        batch_bytes = 0;
        if read == 0 {
            break;
        }
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::from(2)
    } else {
        exit_code(stopped)
    })
}

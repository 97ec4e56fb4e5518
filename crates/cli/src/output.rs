//! What a command prints: aligned tables for people, one JSON document for scripts.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Table as Grid};
use serde_json::Value;

/// `--format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON document on standard output.
    Json,
}

/// A table: column headers and rows of cells.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers (Kafka's tools' headers, e.g. `LOG-END-OFFSET`).
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row; it should have one cell per header.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn render(&self) -> String {
        let mut grid = Grid::new();
        grid.load_preset(NOTHING);
        grid.set_header(self.headers.clone());
        for r in &self.rows {
            grid.add_row(r.clone());
        }
        for col in grid.column_iter_mut() {
            col.set_cell_alignment(CellAlignment::Left);
        }
        // NOTHING pads every cell with a space on each side; lines start at the margin.
        grid.lines().map(|l| l.trim_end().strip_prefix(' ').unwrap_or(&l).to_string() + "\n").collect()
    }
}

/// One part of a command's human output.
pub enum Block {
    Line(String),
    Table(Table),
}

/// A command's result: the JSON document, and what a person reads instead.
pub struct Report {
    pub json: Value,
    pub blocks: Vec<Block>,
}

impl Report {
    pub fn new(json: Value) -> Self {
        Self { json, blocks: Vec::new() }
    }

    pub fn line(mut self, line: impl Into<String>) -> Self {
        self.blocks.push(Block::Line(line.into()));
        self
    }

    pub fn table(mut self, table: Table) -> Self {
        self.blocks.push(Block::Table(table));
        self
    }

    /// Prints the report to standard output in `format`. A reader that went away (`| head`)
    /// ends the output quietly.
    pub fn print(&self, format: Format) {
        let mut text = String::new();
        match format {
            Format::Json => {
                text = serde_json::to_string_pretty(&self.json).unwrap_or_default();
                text.push('\n');
            }
            Format::Table => {
                let mut first = true;
                for b in &self.blocks {
                    match b {
                        Block::Line(l) => {
                            text.push_str(l);
                            text.push('\n');
                        }
                        Block::Table(t) => {
                            if !first {
                                text.push('\n');
                            }
                            text.push_str(&t.render());
                        }
                    }
                    first = false;
                }
            }
        }
        write_stdout(text.as_bytes());
    }
}

/// Writes `bytes` to standard output; a closed pipe (the reader is gone) is not an error.
pub fn write_stdout(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

/// A count of work done, shown on standard error every second while it runs when standard
/// error is a terminal (never in pipes, so scripts read clean output).
pub struct Progress {
    what: &'static str,
    shown: Option<Instant>,
    on: bool,
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        Self { what, shown: None, on: std::io::stderr().is_terminal() }
    }

    /// Shows `done` (of `total`, when known) if a second passed since the last line.
    pub fn update(&mut self, done: u64, total: Option<u64>) {
        if !self.on || self.shown.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.shown = Some(Instant::now());
        match total {
            Some(t) => eprint!("\r{} {done}/{t}", self.what),
            None => eprint!("\r{} {done}", self.what),
        }
    }

    /// Ends the progress line, if one was shown.
    pub fn finish(&mut self) {
        if self.on && self.shown.is_some() {
            eprintln!();
        }
        self.shown = None;
    }
}

/// A list of numbers as Kafka's tools print them: `1,2,3`.
pub fn ids(list: &[i32]) -> String {
    list.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// A value or `-` for absent (Kafka's consumer-groups tool prints `-`).
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

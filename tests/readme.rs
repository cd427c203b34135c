//! README.md's Rust snippets are compiled and run by `cargo test`.
//!
//! Every ```` ```rust ```` block of README.md must appear, line for line, in
//! `examples/readme.rs`, which puts each in a function with what it needs
//! around it. This test includes that file as a module, so building the test
//! compiles every snippet, and `snippets_run` runs them all against servers
//! on 127.0.0.1. (`cargo test` builds the example target too, and CI runs
//! it.)
//!
//! A snippet matches when its lines appear as a contiguous run of lines in
//! the example, both compared after removing their common leading
//! indentation and any trailing whitespace. A Rust block may not hide from
//! the check: one marked ```` ```rust,ignore ```` (or with any other rustdoc
//! attribute), or code that looks like Rust in a ```` ```text ```` or
//! unlabelled block, fails the test.

#[path = "../examples/readme.rs"]
mod example;

const README: &str = include_str!("../README.md");
const EXAMPLE: &str = include_str!("../examples/readme.rs");

#[test]
fn every_rust_snippet_is_in_the_example() {
    let blocks = code_blocks(README).expect("README.md's code fences");
    let rust: Vec<_> = blocks.iter().filter(|b| b.is_rust()).collect();
    assert!(
        rust.len() >= 5,
        "README.md has only {} Rust snippets; did the fences change?",
        rust.len()
    );
    let missing: Vec<String> = rust
        .iter()
        .filter_map(|block| {
            find(&block.lines, EXAMPLE)
                .err()
                .map(|why| block.report(&why))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README.md snippets missing from examples/readme.rs (copy each there verbatim, in a \
         function that gives it what it needs):\n\n{}",
        missing.join("\n\n")
    );
}

#[test]
fn no_rust_snippet_escapes_compilation() {
    let blocks = code_blocks(README).expect("README.md's code fences");
    let problems: Vec<String> = blocks.iter().filter_map(Block::escapes).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Runs every snippet, as `cargo run --example readme` does.
#[test]
fn snippets_run() {
    example::main().expect("the README snippets ran");
}

// ===== the check =====

/// A fenced code block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// The info string after the opening fence: `rust`, `sh`, `text`, ``.
    info: String,
    /// The line of the opening fence, counting from 1.
    line: usize,
    lines: Vec<String>,
}

/// The rustdoc attributes a Rust fence can carry; on a README snippet each
/// would say something untrue (every snippet is compiled and run).
const RUSTDOC_ATTRIBUTES: &[&str] = &[
    "ignore",
    "no_run",
    "should_panic",
    "compile_fail",
    "test_harness",
    "standalone_crate",
];

impl Block {
    fn tokens(&self) -> Vec<&str> {
        self.info
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Whether the block is Rust by its fence: `rust`, `rs`, or a rustdoc
    /// attribute (rustdoc takes `ignore` alone as Rust).
    fn is_rust(&self) -> bool {
        self.tokens().iter().any(|t| {
            matches!(*t, "rust" | "rs")
                || RUSTDOC_ATTRIBUTES.contains(t)
                || t.starts_with("edition")
        })
    }

    /// Why this block would escape the snippet check, if it would.
    fn escapes(&self) -> Option<String> {
        let at = format!("README.md:{} (```{})", self.line, self.info);
        if self.is_rust() {
            if self.info.trim() != "rust" {
                return Some(format!(
                    "{at}: a Rust snippet must be fenced as plain ```rust: every one is compiled \
                     and run through examples/readme.rs"
                ));
            }
            return None;
        }
        self.lines
            .iter()
            .find(|line| looks_like_rust(line))
            .map(|line| {
                format!(
                    "{at}: `{}` looks like Rust; fence it as ```rust and put it in \
                     examples/readme.rs",
                    line.trim()
                )
            })
    }

    fn report(&self, why: &str) -> String {
        format!(
            "README.md:{} (```{}):\n{}\n-- {why}",
            self.line,
            self.info,
            self.lines.join("\n")
        )
    }
}

/// A line that only Rust would have: a statement or item at its start, or
/// an `.await`.
fn looks_like_rust(line: &str) -> bool {
    const STARTS: &[&str] = &[
        "let ",
        "use ",
        "fn ",
        "async fn ",
        "pub ",
        "impl ",
        "struct ",
        "enum ",
        "mod ",
        "#[",
        "match ",
        "while let ",
        "if let ",
    ];
    let line = line.trim_start();
    STARTS.iter().any(|start| line.starts_with(start)) || line.contains(".await")
}

/// The fenced code blocks of `markdown`, or why it cannot tell (a fence left
/// open).
fn code_blocks(markdown: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Block)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                let fence: String = trimmed
                    .chars()
                    .take_while(|&c| c == '`' || c == '~')
                    .collect();
                if fence.len() >= 3 && fence.chars().all(|c| c == fence.chars().next().unwrap()) {
                    let info = trimmed[fence.len()..].trim().to_owned();
                    open = Some((
                        fence,
                        Block {
                            info,
                            line: n + 1,
                            lines: Vec::new(),
                        },
                    ));
                }
            }
            Some((fence, block)) => {
                let closes = trimmed.trim_end().starts_with(fence.as_str())
                    && trimmed.trim_end().chars().all(|c| fence.starts_with(c));
                if closes {
                    blocks.push(open.take().unwrap().1);
                } else {
                    block.lines.push(line.to_owned());
                }
            }
        }
    }
    match open {
        Some((_, block)) => Err(format!("the fence at line {} is never closed", block.line)),
        None => Ok(blocks),
    }
}

/// Removes trailing whitespace and the indentation every non-blank line
/// shares.
fn dedent<S: AsRef<str>>(lines: &[S]) -> Vec<&str> {
    let lines: Vec<&str> = lines.iter().map(|l| l.as_ref().trim_end()).collect();
    let indent = lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .into_iter()
        .map(|l| if l.is_empty() { l } else { &l[indent..] })
        .collect()
}

/// Finds `snippet` in `source` as a contiguous run of lines, both dedented;
/// if it is not there, says how far the best attempt got.
fn find(snippet: &[String], source: &str) -> Result<(), String> {
    let wanted = dedent(snippet);
    if wanted.iter().all(|l| l.is_empty()) {
        return Err("the snippet is empty".into());
    }
    let source: Vec<&str> = source.lines().collect();
    let mut best: Option<(usize, usize)> = None; // (matching lines, start)
    for start in 0..source.len().saturating_sub(wanted.len() - 1) {
        let window = dedent(&source[start..start + wanted.len()]);
        let matching = window
            .iter()
            .zip(&wanted)
            .take_while(|(a, b)| a == b)
            .count();
        if matching == wanted.len() {
            return Ok(());
        }
        if matching > best.map_or(0, |(m, _)| m) {
            best = Some((matching, start));
        }
    }
    Err(match best {
        Some((matching, start)) => format!(
            "closest: examples/readme.rs:{} matches the first {matching} lines, then has `{}` \
             where the snippet has `{}`",
            start + 1,
            source[start + matching].trim(),
            wanted[matching].trim(),
        ),
        None => format!("no run of lines starts with `{}`", wanted[0].trim()),
    })
}

// ===== the check's own tests =====

#[test]
fn finds_a_snippet_at_any_indentation() {
    let source = "fn f() {\n    let a = 1;\n\n    if a > 0 {\n        g(a);\n    }\n}\n";
    let snippet = ["let a = 1;", "", "if a > 0 {", "    g(a);", "}"].map(String::from);
    assert_eq!(find(&snippet, source), Ok(()));
    let inner = ["g(a);".to_owned()];
    assert_eq!(find(&inner, source), Ok(()));
    let changed = ["let a = 1;", "", "if a > 1 {"].map(String::from);
    let err = find(&changed, source).unwrap_err();
    assert!(err.contains("matches the first 2 lines"), "{err}");
    // Indentation inside the snippet counts.
    let flattened = ["if a > 0 {", "g(a);"].map(String::from);
    assert!(find(&flattened, source).is_err());
}

#[test]
fn hidden_rust_is_caught() {
    let md = "```rust,ignore\nlet a = 1;\n```\n\n```text\nlet b = x.await?;\n```\n\n\
              ```\nuse std::io;\n```\n\n```sh\ncargo test --all-features\n```\n\n\
              ````rust\nlet c = 3;\n````\n";
    let blocks = code_blocks(md).unwrap();
    assert_eq!(blocks.len(), 5);
    let escapes: Vec<_> = blocks.iter().map(|b| b.escapes().is_some()).collect();
    assert_eq!(escapes, [true, true, true, false, false]);
    assert!(blocks[0].is_rust() && blocks[4].is_rust() && !blocks[3].is_rust());
    assert_eq!(blocks[4].lines, ["let c = 3;"]);
    assert!(code_blocks("```rust\nlet a = 1;\n").is_err());
}

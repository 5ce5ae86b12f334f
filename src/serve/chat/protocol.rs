//! The chat's wire format: lines of UTF-8, one command per line, fields
//! separated by commas, as in the notes (`register,<name>`, `list`,
//! `chat,<name>,<text>`), plus `quit`.
//!
//! Everything here is plain functions on bytes, with no I/O: every model
//! feeds what it read into [`Lines`] and hands each line to [`parse`], so
//! what a client may send is decided in one place and tested without a
//! socket.

use std::ops::ControlFlow;

/// The longest line a client may send, without its newline. A longer one
/// is answered with an error and skipped up to its newline, never buffered.
pub const MAX_LINE: usize = 4096;

/// The longest name, in characters.
pub const MAX_NAME: usize = 32;

/// What a line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `register,<name>`: take a name (checked by [`check_name`]).
    Register(&'a str),
    /// `list`: every registered name, comma-separated.
    List,
    /// `chat,<name>,<text>` or `chat,*,<text>`.
    Chat {
        /// Who gets it.
        to: To<'a>,
        /// Everything after the second comma, commas included.
        text: &'a str,
    },
    /// `quit`: free the name and leave.
    Quit,
}

/// The recipient of a `chat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To<'a> {
    /// One user, by name.
    One(&'a str),
    /// `*`: every registered user but the sender.
    Everyone,
}

/// Reads one line (without its newline) as a command, or says why not in
/// words fit for an `error,<reason>` reply.
///
/// # Errors
/// A line that is not UTF-8, has a control character in its text, or is
/// not one of the commands.
pub fn parse(line: &[u8]) -> Result<Command<'_>, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "not UTF-8")?;
    let (verb, rest) = match line.split_once(',') {
        Some((verb, rest)) => (verb, Some(rest)),
        None => (line, None),
    };
    match (verb, rest) {
        ("register", Some(name)) => Ok(Command::Register(name)),
        ("register", None) => Err("usage: register,<name>"),
        ("list", None) => Ok(Command::List),
        ("list", Some(_)) => Err("usage: list"),
        ("quit", None) => Ok(Command::Quit),
        ("quit", Some(_)) => Err("usage: quit"),
        ("chat", Some(rest)) => {
            let (to, text) = rest.split_once(',').ok_or("usage: chat,<name>,<text>")?;
            // A tab is text; any other control character could move a
            // terminal's cursor or fake a line on the receiver's screen.
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err("control character in text");
            }
            let to = if to == "*" { To::Everyone } else { To::One(to) };
            Ok(Command::Chat { to, text })
        }
        ("chat", None) => Err("usage: chat,<name>,<text>"),
        _ => Err("unknown command"),
    }
}

/// Whether `name` may be registered: 1 to [`MAX_NAME`] characters, no
/// comma (it would split the line), no control character, not `*`.
///
/// # Errors
/// Why not, for an `error,<reason>` reply.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.chars().count() > MAX_NAME {
        return Err("name longer than 32 characters");
    }
    if name == "*" {
        return Err("* means everyone");
    }
    if name.chars().any(|c| c == ',' || c.is_control()) {
        return Err("name has a comma or a control character");
    }
    Ok(())
}

/// A line cut out of the stream by [`Lines`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A whole line, without its `\n` (or `\r\n`).
    Complete(&'a [u8]),
    /// More than [`MAX_LINE`] bytes without a newline: reported once, and
    /// the rest of it up to the next newline is skipped.
    TooLong,
}

/// Cuts a byte stream into lines, however the reads split it. Holds at most
/// [`MAX_LINE`] bytes of an unfinished line.
#[derive(Debug, Default)]
pub struct Lines {
    /// The start of a line whose newline has not come yet.
    partial: Vec<u8>,
    /// Inside a line already reported as too long: drop bytes up to its
    /// newline.
    skipping: bool,
}

impl Lines {
    /// Whether no line is half received.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty() && !self.skipping
    }

    /// Calls `each` for every line `data` completes, in order. Stops when
    /// `each` breaks, and drops the rest of `data` then.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut each: impl FnMut(Line<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            let head = &data[..end];
            data = &data[end + 1..];
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            let flow = if self.partial.len() + head.len() > MAX_LINE {
                self.partial.clear();
                each(Line::TooLong)
            } else if self.partial.is_empty() {
                each(Line::Complete(without_cr(head)))
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                let flow = each(Line::Complete(without_cr(&line)));
                line.clear();
                self.partial = line;
                flow
            };
            flow?;
        }
        if self.skipping {
            return ControlFlow::Continue(());
        }
        if self.partial.len() + data.len() > MAX_LINE {
            self.partial.clear();
            self.skipping = true;
            return each(Line::TooLong);
        }
        self.partial.extend_from_slice(data);
        ControlFlow::Continue(())
    }
}

/// A line sent by `nc -C` or telnet ends in `\r\n`: the `\r` is not text.
fn without_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<Result<String, ()>> {
        let mut lines = Lines::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            let _ = lines.feed(chunk, |line| {
                seen.push(match line {
                    Line::Complete(l) => Ok(String::from_utf8_lossy(l).into_owned()),
                    Line::TooLong => Err(()),
                });
                ControlFlow::Continue(())
            });
        }
        seen
    }

    #[test]
    fn commands_parse_as_the_notes_write_them() {
        assert_eq!(parse(b"register,alice"), Ok(Command::Register("alice")));
        assert_eq!(parse(b"list"), Ok(Command::List));
        assert_eq!(parse(b"quit"), Ok(Command::Quit));
        assert_eq!(
            parse(b"chat,bob,hi, bob"),
            Ok(Command::Chat {
                to: To::One("bob"),
                text: "hi, bob"
            })
        );
        assert_eq!(
            parse(b"chat,*,hello\tall"),
            Ok(Command::Chat {
                to: To::Everyone,
                text: "hello\tall"
            })
        );
        assert_eq!(parse("chat,bob,ça va ☃".as_bytes()).map(|_| ()), Ok(()));
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, reason) in [
            (&b"hello"[..], "unknown command"),
            (b"", "unknown command"),
            (b"Register,alice", "unknown command"),
            (b"register", "usage: register,<name>"),
            (b"list,friends", "usage: list"),
            (b"quit,now", "usage: quit"),
            (b"chat,bob", "usage: chat,<name>,<text>"),
            (b"chat", "usage: chat,<name>,<text>"),
            (b"chat,bob,\x1b[2J", "control character in text"),
            (b"chat,bob,\xff\xfe", "not UTF-8"),
        ] {
            assert_eq!(
                parse(line),
                Err(reason),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("alice"), Ok(()));
        assert_eq!(check_name("Zoë 2"), Ok(()));
        assert_eq!(check_name(&"é".repeat(MAX_NAME)), Ok(()));
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
        for bad in ["", "*", "a,b", "a\tb", "a\u{7f}", "a\u{85}"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lines_survive_any_split() {
        let stream = b"register,al\r\nlist\nchat,al,x\n";
        let whole = lines_of(&[stream]);
        assert_eq!(
            whole,
            [
                Ok("register,al".into()),
                Ok("list".into()),
                Ok("chat,al,x".into())
            ]
        );
        for cut in 0..stream.len() {
            assert_eq!(
                lines_of(&[&stream[..cut], &stream[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(lines_of(&bytes), whole);
    }

    #[test]
    fn an_overlong_line_is_reported_once_and_skipped() {
        let long = vec![b'x'; MAX_LINE + 1];
        // In one piece, and split so that no single read is too long.
        let mut data = long.clone();
        data.extend_from_slice(b"\nlist\n");
        assert_eq!(lines_of(&[&data]), [Err(()), Ok("list".into())]);
        let (a, b) = data.split_at(MAX_LINE - 10);
        assert_eq!(lines_of(&[a, b]), [Err(()), Ok("list".into())]);
        // Reported before its newline comes, and the skipping holds
        // across reads.
        assert_eq!(lines_of(&[&long, &long]), [Err(())]);
        // The limit itself is allowed.
        let mut exact = vec![b'x'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(lines_of(&[&exact]).len(), 1);
        assert!(lines_of(&[&exact])[0].is_ok());
    }

    #[test]
    fn a_break_stops_at_that_line() {
        let mut lines = Lines::default();
        let mut seen = 0;
        let flow = lines.feed(b"a\nb\nc\n", |_| {
            seen += 1;
            if seen == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert!(flow.is_break());
        assert_eq!(seen, 2);
    }
}

//! The chat's state, shared by every model: who is registered under which
//! name ([`Registry`]), what each connection has said so far ([`Session`]),
//! the lines waiting for each receiver ([`Outbox`], in `outbox.rs`), and,
//! for the one-thread loops, all of it together as plain data ([`Room`]).
//!
//! Nothing here locks or does I/O. The thread-per-client model keeps a
//! `Registry` behind a `Mutex`; the loops own a `Room` outright. The
//! rules of the protocol are written once, in [`Session::receive`].

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use slab::Slab;

use super::counts::ChatCounts;
pub use super::outbox::{MAX_PENDING, Outbox, TOO_SLOW};
use super::protocol::{self, Command, Line, Lines, To};
use crate::stats::Ending;

/// Bad lines in a row after which a client is disconnected: a person makes
/// a typo, a program that sends garbage keeps going. Only the sender's own
/// mistakes count (a line that does not parse, or comes out of order); a
/// refusal that depends on other clients (`name taken`, `no such user`)
/// does not, or a client that leaves could get those writing to it cut
/// off.
pub const MAX_ERRORS: u32 = 5;

/// Registered names and who holds each, by a handle `P` the model chooses:
/// a key into the loop's table, or a shared mailbox for threads.
#[derive(Debug)]
pub struct Registry<P> {
    names: BTreeMap<String, P>,
}

impl<P> Default for Registry<P> {
    fn default() -> Self {
        Registry {
            names: BTreeMap::new(),
        }
    }
}

impl<P> Registry<P> {
    /// Registered names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether nobody is registered.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Unregisters whatever name `holder` holds.
    pub fn remove_holder(&mut self, holder: &P)
    where
        P: PartialEq,
    {
        self.names.retain(|_, held_by| held_by != holder);
    }
}

/// How a connection goes on after what it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Keep reading.
    Continue,
    /// It sent `quit`: its name is free; deliver what it is owed, then close.
    Quit,
    /// It sent [`MAX_ERRORS`] bad lines in a row: told so, its name freed;
    /// deliver what it is owed, then close.
    Expelled,
    /// It was owed more than [`MAX_PENDING`]: its name freed, it gets the
    /// rest of the line it was taking and [`TOO_SLOW`], then is closed.
    /// Never returned by [`Session::receive`]: the model notices it in the
    /// outbox.
    TooSlow,
}

impl After {
    /// How a connection that stopped for this reason ended, once its
    /// outbox is written out.
    pub fn ending(self) -> Ending {
        match self {
            After::Continue | After::Quit => Ending::Closed,
            After::Expelled => Ending::Dropped(&"too many errors"),
            After::TooSlow => Ending::Dropped(&"too slow"),
        }
    }

    /// How it ended if its close grace ran out first.
    pub fn out_of_time(self) -> Ending {
        match self {
            After::TooSlow => Ending::Dropped(&"too slow"),
            _ => Ending::Dropped(&"did not read what it was owed in time"),
        }
    }
}

/// One connection's side of the conversation: its name once registered,
/// its unfinished line, its errors in a row.
#[derive(Debug, Default)]
pub struct Session {
    name: Option<String>,
    lines: Lines,
    errors: u32,
    /// Where a line is put together before it is posted.
    scratch: Vec<u8>,
}

impl Session {
    /// The name it registered, if it did.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Handles everything in `data` (any piece of the stream): every line
    /// it completes is answered or delivered through `post`, which queues a
    /// whole line (newline included) for a receiver. `me` is this
    /// connection's own handle, for replies. Stops at `quit` or at the last
    /// error allowed; what follows is not read.
    pub fn receive<P: Clone + PartialEq>(
        &mut self,
        me: &P,
        data: &[u8],
        registry: &mut Registry<P>,
        post: &mut impl FnMut(&P, &[u8]),
    ) -> After {
        let mut after = After::Continue;
        let Session {
            name,
            lines,
            errors,
            scratch,
        } = self;
        let _ = lines.feed(data, |line| {
            let answer = match line {
                Line::Complete(line) => handle(name, me, line, registry, scratch, post),
                Line::TooLong => Err("line longer than 4096 bytes"),
            };
            match answer {
                Ok(Some(done)) => {
                    after = done;
                    return ControlFlow::Break(());
                }
                Ok(None) => *errors = 0,
                Err(reason) => {
                    *errors += 1;
                    post(me, error_line(scratch, reason));
                    if *errors >= MAX_ERRORS {
                        post(me, b"error,too many errors\n");
                        after = After::Expelled;
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        });
        if after != After::Continue {
            self.leave(registry);
        }
        after
    }

    /// `--racy-register`, wrong on purpose: the *check* half of
    /// registering, alone. If `data` is exactly one `register,NAME` line
    /// this session may send, and NAME is free in `registry` now, returns
    /// NAME, and registers nothing. A racy server then lets go of the
    /// registry (drops its lock, or awaits) before it takes the name with
    /// [`Session::take_name`], and whoever checked meanwhile found it free
    /// too. Anything else: `None`, and the data goes to
    /// [`Session::receive`], which checks and takes in one step.
    pub fn free_name_asked<P>(&self, data: &[u8], registry: &Registry<P>) -> Option<String> {
        if self.name.is_some() || !self.lines.is_empty() {
            return None;
        }
        let line = data.strip_suffix(b"\n")?;
        if line.contains(&b'\n') {
            return None;
        }
        match protocol::parse(line) {
            Ok(Command::Register(name))
                if protocol::check_name(name).is_ok() && !registry.names.contains_key(name) =>
            {
                Some(name.to_owned())
            }
            _ => None,
        }
    }

    /// The *take* half of a racy registration: the name becomes this
    /// session's, whoever took it since the check (the last taker holds it
    /// in the registry; every one of them was told `ok`).
    pub fn take_name<P: Clone>(
        &mut self,
        name: String,
        me: &P,
        registry: &mut Registry<P>,
        post: &mut impl FnMut(&P, &[u8]),
    ) {
        registry.names.insert(name.clone(), me.clone());
        self.name = Some(name);
        post(me, b"ok\n");
    }

    /// Frees the name, if any: on `quit`, at the end of the stream, or
    /// when the connection is dropped. Others may take it at once.
    pub fn leave<P>(&mut self, registry: &mut Registry<P>) {
        if let Some(name) = self.name.take() {
            registry.names.remove(&name);
        }
    }
}

/// Carries out one line; `Ok(Some(_))` ends the session.
fn handle<P: Clone + PartialEq>(
    name: &mut Option<String>,
    me: &P,
    line: &[u8],
    registry: &mut Registry<P>,
    scratch: &mut Vec<u8>,
    post: &mut impl FnMut(&P, &[u8]),
) -> Result<Option<After>, &'static str> {
    let command = protocol::parse(line)?;
    let sender = match (command, name.as_deref()) {
        (Command::Quit, _) => return Ok(Some(After::Quit)),
        (Command::Register(wanted), None) => {
            protocol::check_name(wanted)?;
            if registry.names.contains_key(wanted) {
                // Someone else's doing, not a bad line.
                post(me, b"error,name taken\n");
                return Ok(None);
            }
            *name = Some(wanted.to_owned());
            registry.names.insert(wanted.to_owned(), me.clone());
            post(me, b"ok\n");
            return Ok(None);
        }
        (Command::Register(_), Some(_)) => return Err("already registered"),
        (_, None) => return Err("register first"),
        (_, Some(sender)) => sender,
    };
    match command {
        Command::List => {
            scratch.clear();
            for (i, name) in registry.names.keys().enumerate() {
                if i > 0 {
                    scratch.push(b',');
                }
                scratch.extend_from_slice(name.as_bytes());
            }
            scratch.push(b'\n');
            post(me, scratch);
        }
        Command::Chat { to, text } => {
            scratch.clear();
            for part in [b"from,", sender.as_bytes(), b",", text.as_bytes(), b"\n"] {
                scratch.extend_from_slice(part);
            }
            match to {
                To::One(receiver) => match registry.names.get(receiver) {
                    Some(handle) => post(handle, scratch),
                    // Perhaps it just left: not a bad line.
                    None => post(me, b"error,no such user\n"),
                },
                To::Everyone => {
                    for handle in registry.names.values().filter(|h| *h != me) {
                        post(handle, scratch);
                    }
                }
            }
        }
        Command::Register(_) | Command::Quit => unreachable!("handled above"),
    }
    Ok(None)
}

/// `error,<reason>\n`, put together in `scratch`.
fn error_line<'s>(scratch: &'s mut Vec<u8>, reason: &str) -> &'s [u8] {
    scratch.clear();
    scratch.extend_from_slice(b"error,");
    scratch.extend_from_slice(reason.as_bytes());
    scratch.push(b'\n');
    scratch
}

/// One connection of a one-thread loop, as the [`Room`] knows it.
#[derive(Debug)]
pub struct Member<H> {
    /// What it said so far (taken out while [`Room::receive`] runs it, so
    /// a `quit` or a too-slow member of that very call is unregistered
    /// after it).
    session: Session,
    /// What it is owed.
    pub outbox: Outbox,
    /// How the loop finds it again (a key, a waker): set by the loop.
    pub handle: H,
}

/// The whole chat of a one-thread loop as plain data: the registry, every
/// member's session and outbox. The loop owns it; no lock, no `Arc`, since
/// nothing else can touch it. A member's key is its handle in the registry.
#[derive(Debug)]
pub struct Room<H> {
    registry: Registry<usize>,
    members: Slab<Member<H>>,
    /// Members whose outbox went from empty to not (or too slow) since the
    /// last [`Room::take_woken`]: the loop must write to them.
    woken: Vec<usize>,
    /// Members that became too slow during a `receive`, to unregister.
    too_slow: Vec<usize>,
    /// Deliveries and cut-offs, for `--stats`.
    counts: ChatCounts,
}

impl<H> Default for Room<H> {
    fn default() -> Self {
        Room {
            registry: Registry::default(),
            members: Slab::new(),
            woken: Vec::new(),
            too_slow: Vec::new(),
            counts: ChatCounts::default(),
        }
    }
}

impl<H> Room<H> {
    /// A new connection; returns its key.
    pub fn join(&mut self, handle: H) -> usize {
        self.members.insert(Member {
            session: Session::default(),
            outbox: Outbox::default(),
            handle,
        })
    }

    /// Handles what member `key` sent; see [`Session::receive`].
    pub fn receive(&mut self, key: usize, data: &[u8]) -> After {
        let Room {
            registry,
            members,
            woken,
            too_slow,
            counts,
        } = self;
        // The session is taken out for the call, so that posting may reach
        // every member, this one included.
        let mut session = std::mem::take(&mut members[key].session);
        let after = session.receive(&key, data, registry, &mut |&to, line| {
            let outbox = &mut members[to].outbox;
            let was_empty = outbox.is_empty();
            let cut_off = outbox.push(line);
            counts.posted(to != key, cut_off);
            if cut_off {
                too_slow.push(to);
            }
            if cut_off || was_empty {
                woken.push(to);
            }
        });
        members[key].session = session;
        // Unregistered now, not when the loop closes it: nobody posts to
        // it any more.
        for slow in too_slow.drain(..) {
            members[slow].session.leave(registry);
        }
        after
    }

    /// [`Session::free_name_asked`] for member `key`.
    pub fn free_name_asked(&self, key: usize, data: &[u8]) -> Option<String> {
        self.members[key]
            .session
            .free_name_asked(data, &self.registry)
    }

    /// [`Session::take_name`] for member `key`: its `ok` goes to its own
    /// outbox, and it is woken to write it.
    pub fn take_name(&mut self, key: usize, name: String) {
        let Room {
            registry,
            members,
            woken,
            ..
        } = self;
        let mut session = std::mem::take(&mut members[key].session);
        session.take_name(name, &key, registry, &mut |&to, line| {
            let outbox = &mut members[to].outbox;
            if outbox.is_empty() {
                woken.push(to);
            }
            outbox.push(line);
        });
        members[key].session = session;
    }

    /// Member `key` sent its last byte: its name is free at once.
    pub fn leave(&mut self, key: usize) {
        self.members[key].session.leave(&mut self.registry);
    }

    /// Member `key` is gone: its name is free and its outbox dropped.
    pub fn remove(&mut self, key: usize) -> Member<H> {
        self.leave(key);
        self.members.remove(key)
    }

    /// Member `key`.
    pub fn member(&mut self, key: usize) -> &mut Member<H> {
        &mut self.members[key]
    }

    /// The members that were posted to since the last call (a member may
    /// appear more than once; one that left since is skipped).
    pub fn take_woken(&mut self, mut each: impl FnMut(usize, &mut Member<H>)) {
        for key in self.woken.drain(..) {
            if let Some(member) = self.members.get_mut(key) {
                each(key, member);
            }
        }
    }

    /// Registered names.
    pub fn registered(&self) -> usize {
        self.registry.len()
    }

    /// Adds the chat's `--stats` fields to `line`: deliveries and cut-offs
    /// since the last line, names and bytes owed now.
    pub fn fill(&self, line: &mut crate::lab::live::Line) {
        let owed = self.members.iter().map(|(_, m)| m.outbox.pending().len());
        let owed = owed.sum::<usize>() as u64;
        self.counts.fill(line, self.registered() as u64, owed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A room of `n` members, with what each was posted.
    fn say(room: &mut Room<()>, key: usize, line: &str) -> After {
        room.receive(key, format!("{line}\n").as_bytes())
    }

    fn drain(room: &mut Room<()>, key: usize) -> String {
        let outbox = &mut room.member(key).outbox;
        let text = String::from_utf8(outbox.pending().to_vec()).unwrap();
        outbox.consume(outbox.pending().len());
        text
    }

    #[test]
    fn register_list_chat_quit() {
        let mut room = Room::default();
        let (a, b, c) = (room.join(()), room.join(()), room.join(()));
        assert_eq!(say(&mut room, a, "list"), After::Continue);
        assert_eq!(drain(&mut room, a), "error,register first\n");
        say(&mut room, a, "register,alice");
        say(&mut room, b, "register,alice");
        say(&mut room, b, "register,bob");
        say(&mut room, b, "register,bobby");
        assert_eq!(drain(&mut room, a), "ok\n");
        assert_eq!(
            drain(&mut room, b),
            "error,name taken\nok\nerror,already registered\n"
        );
        say(&mut room, c, "register,carol");
        say(&mut room, a, "list");
        assert_eq!(drain(&mut room, a), "alice,bob,carol\n");
        say(&mut room, a, "chat,bob,hi, bob");
        say(&mut room, a, "chat,dave,hi");
        say(&mut room, b, "chat,*,hello all");
        assert_eq!(
            drain(&mut room, a),
            "error,no such user\nfrom,bob,hello all\n"
        );
        assert_eq!(drain(&mut room, b), "from,alice,hi, bob\n");
        assert_eq!(drain(&mut room, c), "ok\nfrom,bob,hello all\n");
        // Quitting frees the name at once, and stops at the quit.
        assert_eq!(room.receive(a, b"quit\nchat,bob,lost\n"), After::Quit);
        assert_eq!(drain(&mut room, b), "");
        say(&mut room, c, "chat,alice,anyone?");
        assert_eq!(drain(&mut room, c), "error,no such user\n");
        say(&mut room, b, "register,alice");
        say(&mut room, b, "list");
        // A connection that leaves without quit frees its name too.
        room.remove(c);
        say(&mut room, b, "list");
        assert_eq!(
            drain(&mut room, b),
            "error,already registered\nbob,carol\nbob\n"
        );
    }

    /// Refusals that depend on others are answered but not counted: a
    /// client that goes on writing to someone who left, or asks for taken
    /// names, stays.
    #[test]
    fn what_others_did_is_never_held_against_a_client() {
        let mut room = Room::default();
        let (a, b) = (room.join(()), room.join(()));
        say(&mut room, a, "register,alice");
        say(&mut room, b, "register,bob");
        room.remove(b);
        let c = room.join(());
        for _ in 0..2 * MAX_ERRORS {
            assert_eq!(say(&mut room, a, "chat,bob,are you there"), After::Continue);
            assert_eq!(say(&mut room, c, "register,alice"), After::Continue);
        }
        assert_eq!(
            drain(&mut room, a),
            format!(
                "ok\n{}",
                "error,no such user\n".repeat(2 * MAX_ERRORS as usize)
            )
        );
        assert_eq!(
            drain(&mut room, c),
            "error,name taken\n".repeat(2 * MAX_ERRORS as usize)
        );
        assert_eq!(room.registered(), 1);
    }

    #[test]
    fn garbage_is_answered_and_then_expelled() {
        let mut room = Room::default();
        let a = room.join(());
        say(&mut room, a, "register,alice");
        for _ in 0..MAX_ERRORS - 1 {
            assert_eq!(say(&mut room, a, "hello?"), After::Continue);
        }
        // A good line resets the count.
        say(&mut room, a, "list");
        let mut garbage = "\u{1}\n".repeat(MAX_ERRORS as usize);
        garbage.push_str("list\n");
        assert_eq!(room.receive(a, garbage.as_bytes()), After::Expelled);
        let told = drain(&mut room, a);
        assert!(
            told.ends_with("error,unknown command\nerror,too many errors\n"),
            "{told}"
        );
        assert!(!told.contains("\nalice\n\u{1}"), "{told}");
        assert_eq!(room.registered(), 0, "the name is freed");
    }

    #[test]
    fn a_slow_receiver_is_cut_off_at_a_line_boundary() {
        let mut outbox = Outbox::default();
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let mut pushed = 0;
        while !outbox.push(&line) {
            pushed += 1;
            if pushed == 10 {
                // The socket took five lines and a half, and the outbox moves
                // what is left down at the next push.
                outbox.consume(550);
            }
        }
        assert_eq!(pushed, (MAX_PENDING + 550) / 100);
        assert!(outbox.is_too_slow());
        // The half-taken line is finished, the rest dropped, then the
        // reason.
        let mut expected = vec![b'x'; 49];
        expected.push(b'\n');
        expected.extend_from_slice(TOO_SLOW);
        assert_eq!(outbox.pending(), expected);
        assert!(!outbox.push(&line), "nothing more is taken");
        assert_eq!(outbox.take(), expected);
        assert!(outbox.is_empty());
    }

    #[test]
    fn the_room_reports_whom_it_posted_to() {
        let mut room = Room::default();
        let (a, b) = (room.join(()), room.join(()));
        say(&mut room, a, "register,a");
        say(&mut room, b, "register,b");
        let mut woken = Vec::new();
        room.take_woken(|key, _| woken.push(key));
        assert_eq!(woken, [a, b]);
        say(&mut room, a, "chat,b,1");
        say(&mut room, a, "chat,b,2");
        woken.clear();
        room.take_woken(|key, _| woken.push(key));
        // Only when the outbox was empty: b had its `ok` still waiting.
        assert_eq!(woken, Vec::<usize>::new());
        drain(&mut room, b);
        say(&mut room, a, "chat,b,3");
        room.take_woken(|key, _| woken.push(key));
        assert_eq!(woken, [b]);
    }
}

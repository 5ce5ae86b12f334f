//! The chat's commands, for both chat steps, so that they differ only in
//! how their clients share the registry (one lock, or one thread): a
//! client registers a name (`register,NAME`), asks for the names (`list`),
//! sends a line to one name or to everyone else (`chat,NAME,TEXT`,
//! `chat,*,TEXT`), and leaves (`quit`). As the notes' chat: no limits.

use std::collections::BTreeMap;

/// What one command asks of its connection.
pub enum Reply {
    /// Send this line back.
    Line(String),
    /// Nothing to send back (a chat line went out).
    Nothing,
    /// Close the connection (`quit`).
    Quit,
}

/// Runs command `line` of the client called `name` (once it registers),
/// against `names`, every registered client's handle. `me` makes this
/// client's handle when it registers; `send` writes a chat line to one.
pub fn command<H>(
    line: &str,
    name: &mut Option<String>,
    names: &mut BTreeMap<String, H>,
    me: impl FnOnce() -> Option<H>,
    mut send: impl FnMut(&mut H, &str),
) -> Reply {
    let reply = match line.splitn(3, ',').collect::<Vec<_>>()[..] {
        ["register", wanted] if name.is_none() && !wanted.is_empty() && !wanted.contains('*') => {
            if names.contains_key(wanted) {
                return Reply::Line("error,name taken".into());
            }
            let Some(handle) = me() else {
                return Reply::Quit;
            };
            names.insert(wanted.to_owned(), handle);
            *name = Some(wanted.to_owned());
            "ok".to_owned()
        }
        ["list"] => names.keys().cloned().collect::<Vec<_>>().join(","),
        ["chat", to, text] => match name {
            None => "error,register first".to_owned(),
            Some(from) => {
                let line = format!("from,{from},{text}\n");
                let to = names
                    .iter_mut()
                    .filter(|(n, _)| (to == "*" && *n != from) || *n == to);
                match to.map(|(_, peer)| send(peer, &line)).count() {
                    0 => "error,no such user".to_owned(),
                    _ => return Reply::Nothing,
                }
            }
        },
        ["quit"] => return Reply::Quit,
        _ => "error,unknown command".to_owned(),
    };
    Reply::Line(reply)
}

//! Parses tracefs `events/<category>/<name>/format` files: the name, id and field layout of a
//! classic tracepoint's raw record.

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpField {
    pub name: String,
    /// The C declaration without the name, e.g. `const void *` or `__u8`.
    pub type_decl: String,
    pub offset: u16,
    pub size: u16,
    pub signed: bool,
    /// Element count for arrays (`None` when the bound is not a literal number).
    pub array_len: Option<u32>,
    pub is_array: bool,
}

/// A parsed `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpFormat {
    pub name: String,
    pub id: u32,
    pub fields: Vec<TpField>,
}

impl TpFormat {
    pub fn field(&self, name: &str) -> Option<&TpField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Why a format file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("missing `{0}:` line")]
    Missing(&'static str),
    #[error("line {line}: {what}")]
    Bad { line: usize, what: String },
}

fn bad(line: usize, what: impl Into<String>) -> FormatError {
    FormatError::Bad {
        line,
        what: what.into(),
    }
}

/// Parses the text of a `format` file.
pub fn parse(text: &str) -> Result<TpFormat, FormatError> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if let Some(v) = line.strip_prefix("name:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("ID:") {
            id = Some(
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| bad(lineno, format!("bad ID {:?}", v.trim())))?,
            );
        } else if line.starts_with("field:") {
            fields.push(parse_field(line, lineno)?);
        }
    }
    Ok(TpFormat {
        name: name.ok_or(FormatError::Missing("name"))?,
        id: id.ok_or(FormatError::Missing("ID"))?,
        fields,
    })
}

/// `field:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;`
fn parse_field(line: &str, lineno: usize) -> Result<TpField, FormatError> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once(':')
            .ok_or_else(|| bad(lineno, format!("expected key:value, got {part:?}")))?;
        let num = |v: &str| {
            v.trim()
                .parse::<u16>()
                .map_err(|_| bad(lineno, format!("bad {k} {v:?}")))
        };
        match k.trim() {
            "field" => decl = Some(v.trim()),
            "offset" => offset = Some(num(v)?),
            "size" => size = Some(num(v)?),
            "signed" => signed = v.trim() == "1",
            _ => {}
        }
    }
    let decl = decl.ok_or_else(|| bad(lineno, "field without declaration"))?;
    let offset = offset.ok_or_else(|| bad(lineno, "field without offset"))?;
    let size = size.ok_or_else(|| bad(lineno, "field without size"))?;
    // Split the declarator: the name is the last identifier before an optional `[...]`.
    let (head, array) = match decl.find('[') {
        Some(open) => {
            let close = decl
                .rfind(']')
                .filter(|&c| c > open)
                .ok_or_else(|| bad(lineno, format!("unclosed array in {decl:?}")))?;
            (&decl[..open], Some(&decl[open + 1..close]))
        }
        None => (decl, None),
    };
    let head = head.trim_end();
    let name_start = head
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &head[name_start..];
    if name.is_empty() {
        return Err(bad(lineno, format!("no field name in {decl:?}")));
    }
    Ok(TpField {
        name: name.to_string(),
        type_decl: head[..name_start].trim().to_string(),
        offset,
        size,
        signed,
        array_len: array.and_then(|a| a.trim().parse().ok()),
        is_array: array.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_RESET: &str = "name: tcp_send_reset\nID: 2280\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n\
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;\n\
\tfield:__u8 daddr[sizeof(struct sockaddr_in6)];\toffset:60;\tsize:28;\tsigned:0;\n\n\
print fmt: \"skbaddr=%p\", REC->skbaddr\n";

    #[test]
    fn parses_fields() {
        let f = parse(SEND_RESET).unwrap();
        assert_eq!((f.name.as_str(), f.id), ("tcp_send_reset", 2280));
        let skaddr = f.field("skaddr").unwrap();
        assert_eq!((skaddr.offset, skaddr.size), (16, 8));
        assert_eq!(skaddr.type_decl, "const void *");
        let state = f.field("state").unwrap();
        assert!(state.signed);
        assert_eq!(f.field("reason").unwrap().type_decl, "enum sk_rst_reason");
        let saddr = f.field("saddr").unwrap();
        assert_eq!(
            (saddr.offset, saddr.size, saddr.array_len),
            (32, 28, Some(28))
        );
        let daddr = f.field("daddr").unwrap();
        assert!(daddr.is_array);
        assert_eq!((daddr.offset, daddr.size, daddr.array_len), (60, 28, None));
        assert!(f.field("sport").is_none());
    }

    #[test]
    fn live_formats_parse() {
        for tp in [
            "sock/inet_sock_set_state",
            "tcp/tcp_retransmit_skb",
            "tcp/tcp_retransmit_synack",
            "tcp/tcp_send_reset",
            "tcp/tcp_receive_reset",
            "sock/inet_sk_error_report",
        ] {
            let path = format!("/sys/kernel/tracing/events/{tp}/format");
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let f = parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
                    assert!(f.field("sport").is_some() || f.field("saddr").is_some());
                }
                Err(e) if std::env::var_os("CI").is_some() => panic!("{path}: {e}"),
                Err(e) => eprintln!("skipping {path}: {e}"),
            }
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(parse(""), Err(FormatError::Missing("name")));
        assert!(parse("name: x\nID: y\n").is_err());
        assert!(parse("name: x\nID: 1\n\tfield:int a;\toffset:zz;\tsize:4;\n").is_err());
        assert!(parse("name: x\nID: 1\n\tfield:int a[4;\toffset:0;\tsize:4;\n").is_err());
        assert!(parse("name: x\nID: 1\n\tfield: ;\toffset:0;\tsize:4;\n").is_err());
        assert!(parse("name: x\nID: 1\n\tfield:int a;\tsize:4;\n").is_err());
    }
}

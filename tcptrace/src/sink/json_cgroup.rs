//! JSON for cgroups: a connection record's `"cgroup"` member and the `"type":"cgroup"` line
//! that tells a recording what an id's path was. Schema in README.md.
use tcptrace_core::cgroup::CgroupInfo;

use super::{
    RenderCtx,
    json::{head, key, null, num, push_str, text},
};

fn opt_text(buf: &mut Vec<u8>, k: &str, v: Option<&str>) {
    match v {
        Some(v) => text(buf, k, v),
        None => null(buf, k),
    }
}

/// `"path","unit","container"` of a known cgroup (after a leading member).
fn described(buf: &mut Vec<u8>, info: Option<&CgroupInfo>) {
    opt_text(buf, "path", info.map(|i| i.path.as_str()));
    opt_text(buf, "unit", info.and_then(|i| i.unit.as_deref()));
    match info.and_then(|i| i.container.as_ref()) {
        Some(c) => {
            key(buf, "container");
            buf.extend_from_slice(b"{\"runtime\":");
            push_str(buf, c.runtime.name().as_bytes());
            text(buf, "id", &c.id);
            opt_text(buf, "pod_uid", c.pod_uid.as_deref());
            buf.push(b'}');
        }
        None => null(buf, "container"),
    }
}

/// `,"cgroup":{"id":…,"path":…,"unit":…,"container":…}` or `,"cgroup":null`.
pub fn member(buf: &mut Vec<u8>, ctx: &RenderCtx, id: Option<u64>) {
    let Some(id) = id else {
        return null(buf, "cgroup");
    };
    key(buf, "cgroup");
    buf.extend_from_slice(b"{\"id\":");
    buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    described(buf, ctx.cgroups.get(id));
    buf.push(b'}');
}

/// The `cgroup` line (without the trailing newline).
pub fn line(buf: &mut Vec<u8>, ctx: &RenderCtx, ts_ns: u64, id: u64) {
    head(buf, ctx, "cgroup", ts_ns);
    num(buf, "id", id);
    described(buf, ctx.cgroups.get(id));
    buf.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_and_line_are_valid_json() {
        let mut ctx = RenderCtx::default();
        let id = "4c01db0b339c4a6f0e8e7f1f2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4";
        ctx.cgroups
            .learn(7, &format!("/system.slice/docker-{id}.scope"));
        ctx.cgroups.learn(8, "/odd\n\u{1b}[2J\"name");
        let mut b = b"{\"a\":1".to_vec();
        member(&mut b, &ctx, Some(7));
        b.push(b'}');
        let mut none = b"{\"a\":1".to_vec();
        member(&mut none, &ctx, None);
        none.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&none).unwrap();
        assert!(v["cgroup"].is_null());
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["cgroup"]["id"], 7);
        assert_eq!(v["cgroup"]["unit"], format!("docker-{id}.scope"));
        assert_eq!(v["cgroup"]["container"]["runtime"], "docker");
        assert_eq!(v["cgroup"]["container"]["id"], id);
        assert!(v["cgroup"]["container"]["pod_uid"].is_null());
        let mut b = Vec::new();
        line(&mut b, &ctx, 5, 8);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["type"], "cgroup");
        assert_eq!(v["path"], "/odd\n\u{1b}[2J\"name");
        let mut b = Vec::new();
        line(&mut b, &ctx, 5, 9);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(v["path"].is_null());
    }
}

//! Cgroups on the wire: a connection record's `"cgroup"` member (hand-written, it is on every
//! record) and the cold `cgroup` line that tells a recording what an id's path was, so
//! `replay` names cgroups as the live run did. Unit and container are derived from the path
//! (`crate::cgroup`) and written for readers; the reader takes the path only.
use serde::{Deserialize, Serialize};

use super::{
    json::{key, null, push_int, push_str, text},
    namespace::time_text,
};
use crate::{
    cgroup::{CgroupInfo, Container},
    context::Context,
};

/// `{"runtime","id","pod_uid"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMember {
    pub runtime: String,
    pub id: String,
    pub pod_uid: Option<String>,
}

impl ContainerMember {
    fn of(c: &Container) -> Self {
        Self {
            runtime: c.runtime.name().to_string(),
            id: c.id.clone(),
            pod_uid: c.pod_uid.clone(),
        }
    }
}

/// A connection record's `"cgroup"`, read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMember {
    pub id: u64,
    /// Null when the cgroup was gone before it could be named.
    pub path: Option<String>,
    pub unit: Option<String>,
    pub container: Option<ContainerMember>,
}

/// `{"type":"cgroup",...}`: cgroup `id` is at `path` below the cgroup2 mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLine {
    pub ts_ns: u64,
    pub time: String,
    pub id: u64,
    pub path: String,
    pub unit: Option<String>,
    pub container: Option<ContainerMember>,
}

impl CgroupLine {
    /// The line for an id the context knows (`None` while its path is unknown).
    pub fn new(ctx: &Context, ts_ns: u64, id: u64) -> Option<Self> {
        let info = ctx.cgroup(id)?;
        Some(Self {
            ts_ns,
            time: time_text(ctx, ts_ns),
            id,
            path: info.path.clone(),
            unit: info.unit.clone(),
            container: info.container.as_ref().map(ContainerMember::of),
        })
    }
}

fn opt_text(buf: &mut Vec<u8>, k: &str, v: Option<&str>) {
    match v {
        Some(v) => text(buf, k, v),
        None => null(buf, k),
    }
}

/// `,"path","unit","container"` of a cgroup (nulls when unknown).
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
pub fn member(buf: &mut Vec<u8>, ctx: &Context, id: Option<u64>) {
    let Some(id) = id else {
        return null(buf, "cgroup");
    };
    key(buf, "cgroup");
    buf.extend_from_slice(b"{\"id\":");
    push_int(buf, id);
    described(buf, ctx.cgroup(id));
    buf.push(b'}');
}

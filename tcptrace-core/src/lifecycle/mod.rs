//! Connection lifecycles: the table that turns events into one record per connection, the
//! record's model, and how its end is decided.
pub mod conn;
pub mod end;
pub mod keys;
pub mod table;
pub mod visits;

pub use conn::{
    Cold, Conn, End, FinWait2Watch, Options, Owner, Retransmits, Role, Visit, Visits, note,
};
pub use keys::TupleKey;
pub use table::{ConnTable, HalfOpenRequest, TableConfig, TableStats};

#[cfg(test)]
mod tests;

//! SQL-callable functions written in Rust. The rest of the API is SQL, in `sql/`.

mod attempts;
mod backfill;
mod endpoints;
mod events;
mod routes;
mod run;

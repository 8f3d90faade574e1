//! Statements run on every batch, prepared once per session and kept: the
//! worker would otherwise parse and plan them again for each transaction.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::PgOid;
use pgrx::spi::{self, OwnedPreparedStatement, SpiClient, SpiTupleTable};
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

thread_local! {
    /// Keyed by the address of the `&'static str`: one entry per call site's query.
    static PLANS: RefCell<HashMap<usize, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Run `sql` (a constant) with `args`, preparing it on first use with the
/// argument types of that first call.
pub fn execute<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
) -> spi::Result<SpiTupleTable<'conn>> {
    let key = sql.as_ptr() as usize;
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        let statement = match plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
                e.insert(client.prepare_mut(sql, &types)?.keep())
            }
        };
        client.update(&*statement, None, args)
    })
}

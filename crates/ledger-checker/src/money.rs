//! Invariant 3, money conserved to the cent, counting money in flight.

use ledger_wire::failover::AuditSnapshot;
use rust_decimal::Decimal;

use crate::{check, Check};

/// 3. Per region and currency, balances plus money in flight (debited, not yet
///    credited or refunded) sum to the money that came in minus what left, to the
///    cent; no balance is negative unless the account holds a flagged reconciliation.
///    The region's sum of balances is not taken on trust: with one currency (the
///    snapshot's accounts do not name theirs) the accounts must add up to it.
pub fn money_conserved(snapshots: &[AuditSnapshot]) -> Check {
    let mut problems = Vec::new();
    for snapshot in snapshots {
        for (currency, total) in &snapshot.totals {
            let in_flight = total.in_flight.parse::<Decimal>().unwrap_or_default();
            let held = total
                .balances
                .parse::<Decimal>()
                .ok()
                .map(|b| b + in_flight);
            if held != total.external_net.parse::<Decimal>().ok() {
                problems.push(format!(
                    "{}: {currency} balances sum to {} with {} in flight, but deposits minus withdrawals are {}",
                    snapshot.region, total.balances, in_flight, total.external_net
                ));
            }
        }
        if let [(currency, total)] = snapshot.totals.iter().collect::<Vec<_>>()[..] {
            let summed: Option<Decimal> = snapshot
                .accounts
                .iter()
                .map(|a| a.balance.parse::<Decimal>().ok())
                .sum();
            if summed != total.balances.parse::<Decimal>().ok() {
                problems.push(format!(
                    "{}: {currency} accounts add up to {}, but the region reports balances of {}",
                    snapshot.region,
                    summed.map_or("an unreadable amount".into(), |s| s.to_string()),
                    total.balances
                ));
            }
        }
        for account in &snapshot.accounts {
            let negative = account
                .balance
                .parse::<Decimal>()
                .is_ok_and(|b| b.is_sign_negative() && !b.is_zero());
            if negative && !account.flagged {
                problems.push(format!(
                    "{}: {} has balance {} without a flagged reconciliation",
                    snapshot.region, account.id, account.balance
                ));
            }
        }
    }
    check(
        "money conserved",
        problems,
        "balances plus money in flight equal deposits minus withdrawals in every region".into(),
    )
}

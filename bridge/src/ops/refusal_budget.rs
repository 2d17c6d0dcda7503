//! How many refused commands a minute are audited in full. A refusal is
//! evidence worth keeping (a wrong key, a skewed clock, an attack), but
//! whoever can publish on `P/ops/commands` can send thousands a second:
//! past the budget they are only counted, and the next audited refusal
//! carries how many were not. Pure: the caller passes the clock.

/// Refused commands audited in full per minute.
pub const REFUSALS_AUDITED_PER_MINUTE: u32 = 60;

/// The budget of the current minute.
#[derive(Debug)]
pub struct RefusalBudget {
    per_minute: u32,
    minute: u64,
    audited: u32,
    unaudited: u64,
}

impl RefusalBudget {
    /// `per_minute` refusals audited a minute.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            minute: 0,
            audited: 0,
            unaudited: 0,
        }
    }

    /// One refusal at `now` (Unix seconds): `Some(n)` when it is to be
    /// audited, `n` being the refusals not audited since the last one
    /// that was; `None` when over the budget (counted for the next).
    pub fn take(&mut self, now: u64) -> Option<u64> {
        let minute = now / 60;
        if minute != self.minute {
            self.minute = minute;
            self.audited = 0;
        }
        if self.audited >= self.per_minute {
            self.unaudited += 1;
            return None;
        }
        self.audited += 1;
        Some(std::mem::take(&mut self.unaudited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_audited_up_to_the_budget_then_counted() {
        let mut b = RefusalBudget::new(3);
        let t = 60 * 500;
        assert_eq!(b.take(t), Some(0));
        assert_eq!(b.take(t + 1), Some(0));
        assert_eq!(b.take(t + 2), Some(0));
        for i in 0..1000 {
            assert_eq!(b.take(t + 3 + i % 50), None);
        }
        // The next minute's first audited refusal says how many were not.
        assert_eq!(b.take(t + 60), Some(1000));
        assert_eq!(b.take(t + 61), Some(0));
    }
}

//! Sharing a device between models: `OPTIONS (device_fraction '0.5')`.
//!
//! Every device a registry's models run on (`cpu`, `cuda:0`) has one
//! whole to give. While any forward pass of a model runs, the model holds
//! its `device_fraction` of its device (its replicas share that one
//! claim); a pass of another model starts only when what is held leaves
//! room for its own fraction. With the default, 1, a model has its device
//! to itself while it runs, so two models in one query take turns (each
//! pass at full batch size, none of them holding two models' activations
//! at once); two models at `0.5` run side by side.
//!
//! Passes wait in the order they asked (a model already on the device
//! queues too once another waits), so that no model starves another. A
//! waiting pass whose caller goes away leaves the queue.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{ModelError, Result};

/// A share of one device, in thousandths (1 to 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceFraction(u16);

impl DeviceFraction {
    /// The whole device.
    pub const WHOLE: Self = Self(1000);
}

impl Default for DeviceFraction {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl FromStr for DeviceFraction {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || ModelError::BadOption {
            option: "device_fraction".into(),
            reason: format!("'{s}' is not a number above 0 and at most 1 (0.001 steps)"),
        };
        let value = s.trim().parse::<f64>().map_err(|_| bad())?;
        let thousandths = (value * 1000.0).round();
        if !(1.0..=1000.0).contains(&thousandths) {
            return Err(bad());
        }
        Ok(Self(thousandths as u16))
    }
}

impl fmt::Display for DeviceFraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:.3}", f64::from(self.0) / 1000.0);
        f.write_str(text.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// The devices of one registry, by name.
#[derive(Debug, Default)]
pub struct DeviceShares {
    devices: Mutex<HashMap<String, Arc<DeviceShare>>>,
    holders: AtomicU64,
}

impl DeviceShares {
    /// The share of `device` (`cpu`, `cuda:0`) that a model holding
    /// `fraction` of it takes part in, under a holder id of its own.
    pub fn claim(&self, device: &str, fraction: DeviceFraction) -> Claim {
        let share = self
            .devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(device.to_string())
            .or_default()
            .clone();
        Claim {
            share,
            holder: self.holders.fetch_add(1, Ordering::Relaxed),
            fraction,
        }
    }
}

/// One model's part in a device: [`Claim::hold`] before each forward pass.
#[derive(Debug, Clone)]
pub struct Claim {
    share: Arc<DeviceShare>,
    holder: u64,
    fraction: DeviceFraction,
}

impl Claim {
    /// Waits until the model may run a pass on its device, and holds its
    /// fraction until the returned guard drops (or, when `gone` says the
    /// caller went away while waiting, gives up: `None`).
    pub fn hold(&self, gone: &dyn Fn() -> bool) -> Option<Held> {
        self.share.hold(self.holder, self.fraction.0, gone)?;
        Some(Held {
            share: self.share.clone(),
            holder: self.holder,
        })
    }
}

/// A pass's hold on its model's fraction of the device.
#[derive(Debug)]
pub struct Held {
    share: Arc<DeviceShare>,
    holder: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.share.release(self.holder);
    }
}

#[derive(Debug, Default)]
struct DeviceShare {
    state: Mutex<ShareState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct ShareState {
    /// Holder → (thousandths held, passes running).
    held: HashMap<u64, (u16, usize)>,
    /// Tickets of the passes waiting, first come first.
    waiting: VecDeque<u64>,
    next_ticket: u64,
}

impl ShareState {
    fn in_use(&self) -> u32 {
        self.held.values().map(|(t, _)| u32::from(*t)).sum()
    }
}

/// How often a waiting pass looks whether its caller went away.
const RECHECK: Duration = Duration::from_millis(50);

impl DeviceShare {
    fn lock(&self) -> MutexGuard<'_, ShareState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(&self, holder: u64, thousandths: u16, gone: &dyn Fn() -> bool) -> Option<()> {
        let mut state = self.lock();
        if state.waiting.is_empty()
            && let Some((_, passes)) = state.held.get_mut(&holder)
        {
            *passes += 1;
            return Some(());
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(ticket);
        loop {
            let first = state.waiting.front() == Some(&ticket);
            let fits =
                state.held.contains_key(&holder) || state.in_use() + u32::from(thousandths) <= 1000;
            if first && fits {
                state.waiting.pop_front();
                state.held.entry(holder).or_insert((thousandths, 0)).1 += 1;
                // The next in line may fit beside this one.
                self.changed.notify_all();
                return Some(());
            }
            if gone() {
                state.waiting.retain(|t| *t != ticket);
                self.changed.notify_all();
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, RECHECK)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    fn release(&self, holder: u64) {
        let mut state = self.lock();
        if let Some((_, passes)) = state.held.get_mut(&holder) {
            *passes -= 1;
            if *passes == 0 {
                state.held.remove(&holder);
            }
        }
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    fn fraction(s: &str) -> DeviceFraction {
        s.parse().expect("fraction")
    }

    #[test]
    fn fractions_parse_and_print() {
        assert_eq!(fraction("0.5").to_string(), "0.5");
        assert_eq!(fraction("1").to_string(), "1");
        assert_eq!(fraction(" 0.125 ").to_string(), "0.125");
        for bad in ["0", "1.5", "-0.5", "half", "0.0001"] {
            let e = bad.parse::<DeviceFraction>().expect_err(bad).to_string();
            assert!(e.contains("device_fraction"), "{e}");
        }
    }

    /// Runs `passes` passes of 100 ms for each claim, on threads, and
    /// returns the most passes that ran at once.
    fn most_at_once(claims: &[Claim], passes: usize) -> usize {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for claim in claims {
                for _ in 0..passes {
                    let (running, most) = (running.clone(), most.clone());
                    s.spawn(move || {
                        let _held = claim.hold(&|| false).expect("held");
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        running.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        most.load(Ordering::SeqCst)
    }

    #[test]
    fn whole_device_models_take_turns_and_halves_share() {
        let shares = DeviceShares::default();
        let whole = [
            shares.claim("cuda:0", DeviceFraction::WHOLE),
            shares.claim("cuda:0", DeviceFraction::WHOLE),
        ];
        // One pass each: they cannot overlap.
        assert_eq!(most_at_once(&whole, 1), 1);
        let halves = [
            shares.claim("cuda:0", fraction("0.5")),
            shares.claim("cuda:0", fraction("0.5")),
        ];
        assert_eq!(most_at_once(&halves, 1), 2);
        // Other devices are not shared.
        let apart = [
            shares.claim("cuda:0", DeviceFraction::WHOLE),
            shares.claim("cpu", DeviceFraction::WHOLE),
        ];
        assert_eq!(most_at_once(&apart, 1), 2);
    }

    #[test]
    fn one_models_replicas_share_its_claim() {
        let shares = DeviceShares::default();
        let one = [shares.claim("cpu", DeviceFraction::WHOLE)];
        assert_eq!(most_at_once(&one, 4), 4);
    }

    #[test]
    fn a_waiting_model_is_not_starved() {
        let shares = Arc::new(DeviceShares::default());
        let busy = shares.claim("cpu", DeviceFraction::WHOLE);
        let other = shares.claim("cpu", DeviceFraction::WHOLE);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Two threads of one model keep the device busy with overlapping
        // passes.
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (busy, stop) = (busy.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let _held = busy.hold(&|| false);
                        std::thread::sleep(Duration::from_millis(30));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let held = other.hold(&|| false).expect("held");
        let waited = started.elapsed();
        drop(held);
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().expect("join");
        }
        assert!(waited < Duration::from_secs(1), "waited {waited:?}");
    }

    #[test]
    fn a_caller_that_goes_away_leaves_the_queue() {
        let shares = DeviceShares::default();
        let first = shares.claim("cpu", DeviceFraction::WHOLE);
        let second = shares.claim("cpu", DeviceFraction::WHOLE);
        let third = shares.claim("cpu", fraction("0.5"));
        let held = first.hold(&|| false).expect("held");
        let started = Instant::now();
        assert!(
            second
                .hold(&|| started.elapsed() > Duration::from_millis(120))
                .is_none()
        );
        drop(held);
        // Nobody is left waiting ahead of the third.
        assert!(third.hold(&|| true).is_some());
    }
}

//! Learning-rate schedules: linear warm-up, then cosine, linear or constant.

use crate::config::{ScheduleConfig, ScheduleKind};

/// The learning rate of every optimizer step of a run.
#[derive(Debug, Clone)]
pub struct LrSchedule {
    base_lr: f64,
    kind: ScheduleKind,
    warmup_steps: usize,
    total_steps: usize,
}

impl LrSchedule {
    /// A schedule over `total_steps` optimizer steps peaking at `base_lr`; the warm-up lasts
    /// `ceil(warmup_ratio * total_steps)` steps.
    pub fn new(config: &ScheduleConfig, base_lr: f64, total_steps: usize) -> Self {
        let warmup_steps = (config.warmup_ratio * total_steps as f64).ceil() as usize;
        Self {
            base_lr,
            kind: config.kind,
            warmup_steps: warmup_steps.min(total_steps),
            total_steps,
        }
    }

    /// Number of warm-up steps.
    pub fn warmup_steps(&self) -> usize {
        self.warmup_steps
    }

    /// The learning rate used by optimizer step `step` (0-based), as transformers' schedulers.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / decay_steps).min(1.0);
        let factor = match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => 1.0 - progress,
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        self.base_lr * factor.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind) -> LrSchedule {
        let config = ScheduleConfig {
            kind,
            warmup_ratio: 0.03,
        };
        LrSchedule::new(&config, 2e-5, 100)
    }

    #[test]
    fn warmup_then_decay() {
        let s = schedule(ScheduleKind::Cosine);
        assert_eq!(s.warmup_steps(), 3);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(1) - 2e-5 / 3.0).abs() < 1e-18);
        assert_eq!(s.lr(3), 2e-5);
        // Half-way through the decay the cosine is at half the peak.
        let mid = 3 + 97 / 2;
        assert!(
            (s.lr(mid) / 2e-5 - 0.5 * (1.0 + (std::f64::consts::PI * 48.0 / 97.0).cos())).abs()
                < 1e-12
        );
        assert!(s.lr(99) < 1e-8);
        let l = schedule(ScheduleKind::Linear);
        assert!((l.lr(50) - 2e-5 * (1.0 - 47.0 / 97.0)).abs() < 1e-18);
        let c = schedule(ScheduleKind::Constant);
        assert_eq!(c.lr(99), 2e-5);
    }
}

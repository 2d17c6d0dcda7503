//! Flag parsers: names, shares (`10%`, `2.5%`), durations (`90s`, `10m`,
//! `1h`), waves (`acme=10%,globex=100%`) and kinds. Each error says what
//! was expected, with an example.

use bridge::campaign::spec::{Kind, WaveSpec};
use schemas::GroupName;

/// A name of the protocol alphabet.
pub fn name<T>(s: &str) -> Result<T, String>
where
    T: TryFrom<String, Error = schemas::NameError>,
{
    T::try_from(s.to_string()).map_err(|e| e.to_string())
}

/// A share as basis points: `95%`, `2.5%`, `100%`, `0.01%`.
pub fn percent(s: &str) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a share: write a percentage such as 95%, 2.5% or 100%");
    let num = s.trim().strip_suffix('%').ok_or_else(bad)?.trim();
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty()
        || frac.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let bp = whole.saturating_mul(100).saturating_add(frac);
    if bp > 10_000 {
        return Err(format!("{s:?} is above 100%"));
    }
    u16::try_from(bp).map_err(|_| bad())
}

/// A duration in seconds: `90`, `90s`, `10m`, `1h`, `1h30m`.
pub fn duration(s: &str) -> Result<u64, String> {
    duration_ms(s).map(|ms| ms / 1000)
}

/// A point in time as Unix seconds: RFC 3339 (`2026-12-03T02:00:00Z`,
/// any offset) or `+DURATION` from now (`+90m`).
pub fn time(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Some(d) = t.strip_prefix('+') {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return duration(d).map(|secs| now.saturating_add(secs)).map_err(|_| {
            format!("{s:?} is not a time: write e.g. 2026-12-03T02:00:00Z, 2026-12-03T02:00:00+01:00 or +90m")
        });
    }
    let at = t.parse::<jiff::Timestamp>().map_err(|e| {
        format!("{s:?} is not a time ({e}): write e.g. 2026-12-03T02:00:00Z, 2026-12-03T02:00:00+01:00 or +90m")
    })?;
    u64::try_from(at.as_second()).map_err(|_| format!("{s:?} is before 1970"))
}

/// A maintenance window of a group: `line-3=Mon-Fri 22:00-05:00
/// Europe/Brussels` (see `bridge::campaign::window`).
pub fn window(s: &str) -> Result<(GroupName, String), String> {
    let (group, text) = s.split_once('=').ok_or_else(|| {
        format!(
            "{s:?} is not GROUP=WINDOW: write e.g. 'line-3=Mon-Fri 22:00-05:00 Europe/Brussels'"
        )
    })?;
    let group: GroupName = name(group.trim())?;
    let w: bridge::campaign::window::Window = text.parse().map_err(|e| format!("{e}"))?;
    Ok((group, w.to_string()))
}

/// A duration in milliseconds: `500ms`, `2s`, `10m`, `1h`.
pub fn duration_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration: write e.g. 90s, 10m, 1h30m or 500ms");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(|v| v.saturating_mul(1000))
            .map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(ms));
    }
    Ok(total)
}

/// One wave: `GROUP=SHARE[,GROUP=SHARE...]`.
pub fn wave(s: &str) -> Result<WaveSpec, String> {
    let mut w = WaveSpec::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (g, share) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: write GROUP=SHARE, e.g. acme=10%"))?;
        let group = GroupName::new(g.trim()).map_err(|e| e.to_string())?;
        let bp = percent(share)?;
        if w.cohorts.insert(group.clone(), bp).is_some() {
            return Err(format!(
                "group {group} is given twice in one wave: give it once"
            ));
        }
    }
    if w.cohorts.is_empty() {
        return Err("a wave names at least one group, e.g. --wave canary=100%".into());
    }
    Ok(w)
}

/// A ramp of shares, ascending: `1%*2` starts at 1% and multiplies by 2
/// each wave until 100% (1, 2, 4, ... 64, 100); `1%,10%,50%,100%` gives
/// the steps.
pub fn ramp(s: &str) -> Result<Ramp, String> {
    ramp_steps(s).map(Ramp)
}

/// The shares of a `--ramp`, basis points, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ramp(pub Vec<u16>);

fn ramp_steps(s: &str) -> Result<Vec<u16>, String> {
    let t = s.trim();
    if let Some((start, factor)) = t.split_once('*') {
        let start = percent(start)?;
        let factor: u32 = factor.trim().parse().map_err(|_| {
            format!("{s:?}: the factor after * is a whole number from 2 to 10, e.g. 1%*2")
        })?;
        if !(2..=10).contains(&factor) || start == 0 {
            return Err(format!(
                "{s:?}: write START*FACTOR with START above 0% and FACTOR from 2 to 10, e.g. 1%*2"
            ));
        }
        let mut steps = Vec::new();
        let mut share = u32::from(start);
        while share < 10_000 {
            steps.push(share as u16);
            share *= factor;
        }
        steps.push(10_000);
        return Ok(steps);
    }
    let steps = t
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(percent)
        .collect::<Result<Vec<u16>, String>>()?;
    if steps.is_empty() {
        return Err(format!(
            "{s:?}: give steps such as 1%,10%,50%,100%, or 1%*2"
        ));
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) || steps[0] == 0 {
        return Err(format!(
            "{s:?}: each step must be above 0% and above the one before, e.g. 1%,10%,50%,100%"
        ));
    }
    Ok(steps)
}

/// The waves of a ramp: each step raises every target group to that share.
pub fn ramp_waves(targets: &[GroupName], steps: &[u16]) -> Vec<WaveSpec> {
    steps
        .iter()
        .map(|&bp| WaveSpec {
            cohorts: targets.iter().map(|g| (g.clone(), bp)).collect(),
        })
        .collect()
}

/// firmware, app or config.
pub fn kind(s: &str) -> Result<Kind, String> {
    match s {
        "firmware" => Ok(Kind::Firmware),
        "app" => Ok(Kind::App),
        "config" => Ok(Kind::Config),
        _ => Err(format!("{s:?} is not a kind: firmware, app or config")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        assert_eq!(percent("95%"), Ok(9500));
        assert_eq!(percent("2.5%"), Ok(250));
        assert_eq!(percent("0.01%"), Ok(1));
        assert_eq!(percent("100%"), Ok(10000));
        assert_eq!(percent(" 10 %"), Ok(1000));
        for bad in ["95", "x%", "1.234%", "%", "-1%", "101%"] {
            assert!(percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(time("2026-12-03T02:00:00Z"), Ok(1_796_263_200));
        assert_eq!(time("2026-12-03T03:00:00+01:00"), Ok(1_796_263_200));
        let later = time("+90m").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((now + 5399..=now + 5401).contains(&later), "{later} {now}");
        for bad in ["tomorrow", "2026-12-03 02:00", "+", "+soon"] {
            let e = time(bad).unwrap_err();
            assert!(e.contains("2026-12-03T02:00:00Z"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("90"), Ok(90));
        assert_eq!(duration("90s"), Ok(90));
        assert_eq!(duration("10m"), Ok(600));
        assert_eq!(duration("1h30m"), Ok(5400));
        assert_eq!(duration_ms("500ms"), Ok(500));
        for bad in ["", "m", "10x", "1.5h", "-3s"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ramps() {
        assert_eq!(
            ramp_steps("1%*2"),
            Ok(vec![100, 200, 400, 800, 1600, 3200, 6400, 10000])
        );
        assert_eq!(ramp_steps("10%*3"), Ok(vec![1000, 3000, 9000, 10000]));
        assert_eq!(
            ramp_steps("1%,10%,50%,100%"),
            Ok(vec![100, 1000, 5000, 10000])
        );
        assert_eq!(ramp_steps("100%*2"), Ok(vec![10000]));
        assert_eq!(ramp_steps("25%"), Ok(vec![2500]));
        for bad in [
            "", "0%*2", "1%*1", "1%*x", "1%*11", "10%,5%", "10%,10%", "0%,10%", "1*2",
        ] {
            assert!(ramp_steps(bad).is_err(), "{bad}");
        }
        let g = |s: &str| GroupName::new(s).unwrap();
        let waves = ramp_waves(&[g("acme"), g("globex")], &[100, 10000]);
        assert_eq!(waves.len(), 2);
        assert_eq!(waves[0].cohorts[&g("acme")], 100);
        assert_eq!(waves[1].cohorts[&g("globex")], 10000);
    }

    #[test]
    fn waves() {
        let w = wave("acme=10%,globex=100%").unwrap();
        assert_eq!(w.cohorts.len(), 2);
        assert_eq!(w.cohorts[&GroupName::new("acme").unwrap()], 1000);
        assert!(wave("acme=10%,acme=20%").unwrap_err().contains("twice"));
        assert!(wave("acme").is_err());
        assert!(wave("a/b=10%").is_err());
        assert!(wave("").is_err());
    }
}

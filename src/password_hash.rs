//! The argon2id PHC password-hash format: which configured hashes are accepted and what their
//! parameters are. Used by config loading (a bad hash fails at start-up, the error naming its
//! key) and by `auth` (which verifies passwords against these hashes and times unknown users
//! with the median configured parameters).
//!
//! Accepted: argon2id, version 19, parameters in the ranges below. argon2i and argon2d are
//! refused (weaker against the attacks argon2id was made for), and so are parameters that make a
//! hash trivial to crack or a verification cost more than the memory bound in `auth` allows.

use std::ops::RangeInclusive;

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Params, Version};

/// Memory per verification, KiB: from OWASP's smallest recommended setting (7 MiB) to 64 MiB
/// (RFC 9106's low-memory profile; PHP's `PASSWORD_ARGON2ID` default).
pub const M_COST_KIB: RangeInclusive<u32> = 7_168..=65_536;
/// Passes over the memory.
pub const T_COST: RangeInclusive<u32> = 1..=10;
/// Lanes (computed one after the other here: they change the result, not the cost).
pub const P_COST: RangeInclusive<u32> = 1..=8;
/// `m × t`, the work of one verification in KiB-passes: at least OWASP's weakest recommended
/// pair (m=7168 KiB, t=5; `authbridge hash-password` makes m=19456, t=2 = 38,912), at most PHP's
/// default (m=65536, t=4).
pub const WORK: RangeInclusive<u64> = 35_840..=262_144;
/// Length of the hash output, bytes.
pub const OUTPUT_LEN: RangeInclusive<usize> = 16..=64;
/// Length of the decoded salt, bytes (argon2's minimum is 8; a PHC salt holds at most 48).
pub const SALT_LEN: RangeInclusive<usize> = 8..=48;

/// A configured hash that passed [`parse`]: its parameters and salt length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashShape {
    pub params: Params,
    pub salt_len: usize,
}

impl HashShape {
    /// The work of one verification (`m × t`), the key the median is taken on.
    pub fn work(&self) -> u64 {
        u64::from(self.params.m_cost()) * u64::from(self.params.t_cost())
    }
}

/// Parse `hash` and check that it is an argon2id PHC string with parameters in range.
pub fn parse(hash: &str) -> Result<HashShape, String> {
    let parsed = PasswordHash::new(hash)
        .map_err(|e| format!("not a PHC password hash ({e}); expected `$argon2id$v=19$m=...`"))?;
    if Algorithm::try_from(parsed.algorithm) != Ok(Algorithm::Argon2id) {
        return Err(format!(
            "hash algorithm `{}` is not accepted: argon2id only",
            parsed.algorithm
        ));
    }
    if parsed.version != Some(Version::V0x13 as u32) {
        return Err(format!(
            "argon2id version {} is not accepted: v=19 only",
            parsed
                .version
                .map_or("(none)".to_string(), |v| v.to_string())
        ));
    }
    let params = Params::try_from(&parsed).map_err(|e| format!("bad argon2id parameters: {e}"))?;
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    let shown = format!("m={m},t={t},p={p}");
    if !M_COST_KIB.contains(&m) {
        return Err(format!(
            "argon2id parameters {shown}: m must be {}..={} KiB",
            M_COST_KIB.start(),
            M_COST_KIB.end()
        ));
    }
    if !T_COST.contains(&t) {
        return Err(format!(
            "argon2id parameters {shown}: t must be {}..={}",
            T_COST.start(),
            T_COST.end()
        ));
    }
    if !P_COST.contains(&p) {
        return Err(format!(
            "argon2id parameters {shown}: p must be {}..={}",
            P_COST.start(),
            P_COST.end()
        ));
    }
    let work = u64::from(m) * u64::from(t);
    if work < *WORK.start() {
        return Err(format!(
            "argon2id parameters {shown} are too weak: m × t must be at least {} (e.g. m=19456,t=2)",
            WORK.start()
        ));
    }
    if work > *WORK.end() {
        return Err(format!(
            "argon2id parameters {shown} are too costly: m × t must be at most {}",
            WORK.end()
        ));
    }
    let Some(output) = parsed.hash else {
        return Err("the PHC string has no hash value".into());
    };
    if !OUTPUT_LEN.contains(&output.len()) {
        return Err(format!(
            "the hash value is {} bytes; expected {}..={}",
            output.len(),
            OUTPUT_LEN.start(),
            OUTPUT_LEN.end()
        ));
    }
    let Some(salt) = parsed.salt else {
        return Err("the PHC string has no salt".into());
    };
    let mut buf = [0u8; 64];
    let salt_len = salt
        .decode_b64(&mut buf)
        .map_err(|e| format!("bad salt ({e})"))?
        .len();
    if !SALT_LEN.contains(&salt_len) {
        return Err(format!(
            "the salt is {salt_len} bytes; expected {}..={}",
            SALT_LEN.start(),
            SALT_LEN.end()
        ));
    }
    Ok(HashShape { params, salt_len })
}

/// Check that `hash` is an argon2id PHC string we accept (see [`parse`]).
pub fn check_hash(hash: &str) -> Result<(), String> {
    parse(hash).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    fn make(algorithm: Algorithm, version: Version, m: u32, t: u32, p: u32) -> String {
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        argon2::Argon2::new(algorithm, version, Params::new(m, t, p, None).unwrap())
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn bad_hashes_are_explained() {
        assert!(check_hash("plaintext").unwrap_err().contains("PHC"));
        assert!(
            check_hash("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA")
                .unwrap_err()
                .contains("argon2id")
        );
    }

    /// argon2id v=19 only, parameters in range; the defaults (what `hash-password` makes) pass.
    #[test]
    fn only_argon2id_with_sane_parameters_is_accepted() {
        let ok = make(Algorithm::Argon2id, Version::V0x13, 19_456, 2, 1);
        let shape = parse(&ok).unwrap();
        assert_eq!((shape.params.m_cost(), shape.salt_len), (19_456, 16));
        // PHP's PASSWORD_ARGON2ID default and RFC 9106's low-memory profile.
        check_hash(&make(Algorithm::Argon2id, Version::V0x13, 65_536, 4, 1)).unwrap();
        check_hash(&make(Algorithm::Argon2id, Version::V0x13, 65_536, 3, 4)).unwrap();

        for alg in [Algorithm::Argon2i, Algorithm::Argon2d] {
            let e = check_hash(&make(alg, Version::V0x13, 19_456, 2, 1)).unwrap_err();
            assert!(e.contains("argon2id only"), "{e}");
        }
        let e = check_hash(&make(Algorithm::Argon2id, Version::V0x10, 19_456, 2, 1)).unwrap_err();
        assert!(e.contains("v=19 only"), "{e}");
        for (m, t, p, want) in [
            (4_096, 10, 1, "m must be 7168..=65536 KiB"),
            (131_072, 1, 1, "m must be"),
            (19_456, 11, 1, "t must be 1..=10"),
            (19_456, 2, 9, "p must be 1..=8"),
            (19_456, 1, 1, "too weak"),
            (7_168, 4, 1, "too weak"),
            (65_536, 5, 1, "too costly"),
        ] {
            let e = check_hash(&make(Algorithm::Argon2id, Version::V0x13, m, t, p)).unwrap_err();
            assert!(e.contains(want), "m={m},t={t},p={p}: {e}");
        }
        // Missing version, short salt, short hash value.
        let e = check_hash("$argon2id$m=19456,t=2,p=1$c2l4dGVlbiBieXRlIHNsdA$aGFzaGhhc2hoYXNo")
            .unwrap_err();
        assert!(e.contains("v=19 only"), "{e}");
        let e =
            check_hash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNo")
                .unwrap_err();
        assert!(e.contains("salt is 4 bytes"), "{e}");
        let e =
            check_hash("$argon2id$v=19$m=19456,t=2,p=1$c2l4dGVlbiBieXRlIHNsdA$aGFzaGhhc2hoYXNo")
                .unwrap_err();
        assert!(e.contains("hash value is 12 bytes"), "{e}");
    }

    /// A bad hash fails config loading, and the error names the login it belongs to.
    #[test]
    fn config_loading_names_the_bad_hash() {
        let good = make(Algorithm::Argon2id, Version::V0x13, 19_456, 2, 1);
        let bad = make(Algorithm::Argon2i, Version::V0x13, 19_456, 2, 1);
        let yaml = format!(
            "providers:\n  m365: {{ type: microsoft, tenant: fabrikam.onmicrosoft.com, client_id: x }}\n\
             accounts:\n  - name: tickets\n    provider: m365\n    mailbox: tickets@contoso.com\n    logins:\n\
             \x20     - {{ username: glpi, password_hash: \"{good}\" }}\n\
             \x20     - {{ username: cron, password_hash: \"{bad}\" }}\n"
        );
        let e = crate::config::Config::parse(std::path::Path::new("/etc/authbridge/t.yaml"), &yaml)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "/etc/authbridge/t.yaml: accounts[0].logins[1].password_hash: hash algorithm `argon2i` is not accepted: argon2id only"
            ),
            "{e}"
        );
    }
}

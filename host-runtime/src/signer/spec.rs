//! One way to name a signing backend on the command line and in configuration.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use guard_core::Scheme;

use super::{KmsOptions, KmsReplica, PinSource, Pkcs11Mechanism, Pkcs11Options, SignError};

/// Which signer to open, parsed from a string.
///
/// The form is `BACKEND:VALUE;name=value;…`, after the path attributes of PKCS#11 URIs
/// (RFC 7512): the first item may be a bare value (the key file, the KMS key), the rest are
/// `name=value` pairs separated by `;`, and values are percent-decoded (`%3B` for a `;`).
///
/// - `local:PATH` — a PKCS#8 PEM key file; `scheme=`.
/// - `aws-kms:KEY` — a key id, key ARN, alias (`alias/…`) or alias ARN; `region=`, `endpoint=`
///   (for a KMS-compatible server), `scheme=`, `timeout=` (seconds, `10` or `10s`). Credentials
///   and, without `region=`, the region come from the usual AWS environment (variables, profile
///   files, SSO, instance or container roles).
///
///   Multi-Region keys: `replicas=REGION[@ENDPOINT],…` names the regions the key is replicated
///   to, in the order they are tried when the primary (`region=`, then required) cannot be
///   reached, each with its own endpoint URL when it is not AWS's; `failback=` (seconds, default
///   `30`) is how long a replica serves before the primary is tried again. For example
///   `aws-kms:alias/sigil-vault;region=us-east-1;replicas=eu-west-1,ap-southeast-2@https://kms.example:8443;failback=60s`.
///   The vault's master key takes the same form (`[vault] master_key`); it should name an
///   alias, which rotation moves to a new key.
/// - `pkcs11:module=PATH;token=LABEL;key=LABEL` — `module-path=` and `object=` are accepted for
///   `module=` and `key=`; `id=` (the key's CKA_ID, percent-encoded bytes or hex), `slot-id=`,
///   `pin-env=VAR` or `pin-file=PATH` (RFC 7512's `pin-source=file:PATH` too; without either,
///   the variable `SIGIL_PKCS11_PIN`), `scheme=`, `mechanism=auto|sha256-rsa|rsa`. A query part
///   (`?module-path=…&pin-source=…`) as in RFC 7512 is read the same way. A PIN is never taken
///   from the spec itself (`pin-value=` is refused): specs end up in shell history and logs.
///
/// `scheme=` is `rsassa-pkcs1v15-sha256` (the default; `pkcs1` for short) or
/// `rsassa-pss-sha256` (`pss`).
///
/// The vault's master key (`[vault] master_key`, `sigil keys --master-key`) is named the same
/// way; `local:` and `aws-kms:` mean what they mean here. As a master key,
/// `pkcs11:module=PATH;token=LABEL;key=LABEL` takes the same module, token, slot and PIN
/// attributes, and `key=` names an AES-256 key kept in versions `LABEL/v1`, `LABEL/v2`, … (the
/// highest is current; see [`crate::vault::Pkcs11MasterKey`]). When the token holds no version
/// yet, the first use makes `LABEL/v1` inside the token; `create=no` refuses instead (for
/// production, where a missing key means the wrong token). `id=`, `type=`, `scheme=` and
/// `mechanism=` are the signer's and are refused there.
///
/// ```
/// use host_runtime::signer::SignerSpec;
///
/// let spec: SignerSpec = "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=sigil;key=templates"
///     .parse()?;
/// assert!(matches!(spec, SignerSpec::Pkcs11(_)));
/// let kms: SignerSpec = "aws-kms:alias/sigil-templates;region=eu-west-1;scheme=pss".parse()?;
/// assert!(matches!(kms, SignerSpec::AwsKms(_)));
/// # Ok::<(), host_runtime::signer::SignError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SignerSpec {
    /// A key file on this machine.
    Local {
        /// PKCS#8 PEM private key.
        path: PathBuf,
        /// The scheme to sign with.
        scheme: Scheme,
    },
    /// An AWS KMS key.
    AwsKms(KmsOptions),
    /// A key on a PKCS#11 token.
    Pkcs11(Pkcs11Options),
}

/// The variable a PKCS#11 PIN is read from when the spec names no source.
pub const DEFAULT_PIN_ENV: &str = "SIGIL_PKCS11_PIN";

impl FromStr for SignerSpec {
    type Err = SignError;

    fn from_str(text: &str) -> Result<Self, SignError> {
        let (backend, positional, mut attributes) = split(text)?;
        let spec = match backend {
            "local" => {
                let path = attributes.take("path").or(positional).ok_or_else(|| {
                    spec_error("`local:` needs the key file, as in `local:keys/signing-key.pem`")
                })?;
                SignerSpec::Local {
                    path: PathBuf::from(path),
                    scheme: attributes.scheme()?,
                }
            }
            "aws-kms" => {
                let key = attributes.take("key").or(positional).ok_or_else(|| {
                    spec_error("`aws-kms:` needs a key id, ARN or alias, as in `aws-kms:alias/sigil-templates`")
                })?;
                let mut options = KmsOptions::new(key);
                options.region = attributes.take("region").map(check_region).transpose()?;
                options.endpoint = attributes
                    .take("endpoint")
                    .map(check_endpoint)
                    .transpose()?;
                options.scheme = attributes.scheme()?;
                if let Some(timeout) = attributes.take("timeout") {
                    options.timeout = parse_seconds("timeout", &timeout)?;
                }
                if let Some(failback) = attributes.take("failback") {
                    options.failback = parse_seconds("failback", &failback)?;
                }
                if let Some(replicas) = attributes.take("replicas") {
                    let primary = options.region.as_deref().ok_or_else(|| {
                        spec_error("`replicas=` needs the primary region named too (`region=`)")
                    })?;
                    options.replicas = parse_replicas(primary, &replicas)?;
                }
                SignerSpec::AwsKms(options)
            }
            "pkcs11" => {
                if let Some(value) = positional {
                    return Err(spec_error(format!(
                        "`pkcs11:` takes `name=value` attributes, not `{value}`"
                    )));
                }
                let token = attributes.token()?;
                let key_id = attributes.take("id").map(|id| decode_id(&id)).transpose()?;
                let mechanism = match attributes.take("mechanism").as_deref() {
                    None | Some("auto") => Pkcs11Mechanism::Auto,
                    Some("sha256-rsa") => Pkcs11Mechanism::Sha256Rsa,
                    Some("rsa") => Pkcs11Mechanism::Rsa,
                    Some(other) => {
                        return Err(spec_error(format!(
                            "`mechanism={other}`; use `auto`, `sha256-rsa` or `rsa`"
                        )))
                    }
                };
                // RFC 7512 URIs often say which kind of object they mean; a signer means a private key.
                if let Some(kind) = attributes.take("type") {
                    if kind != "private" {
                        return Err(spec_error(format!(
                            "`type={kind}`: a signer needs the private key (`type=private`)"
                        )));
                    }
                }
                let key_label = attributes.take("key").or_else(|| attributes.take("object"));
                if key_label.is_none() && key_id.is_none() {
                    return Err(spec_error("`pkcs11:` needs the key: `key=LABEL` or `id=…`"));
                }
                SignerSpec::Pkcs11(Pkcs11Options {
                    module: token.module,
                    token: token.token,
                    slot: token.slot,
                    key_label,
                    key_id,
                    pin: token.pin,
                    scheme: attributes.scheme()?,
                    mechanism,
                })
            }
            other => {
                return Err(spec_error(format!(
                    "unknown backend `{other}`; use `local`, `aws-kms` or `pkcs11`"
                )))
            }
        };
        attributes.finish(backend)?;
        Ok(spec)
    }
}

pub(crate) fn spec_error(message: impl Into<String>) -> SignError {
    SignError::Spec(message.into())
}

/// Whether `name` is an attribute of the `local` backend (a bare path may contain `=`).
fn is_attribute(name: &str) -> bool {
    matches!(name, "path" | "scheme")
}

/// `text` as its backend, its bare first value and its `name=value` attributes (names in lower
/// case, values percent-decoded).
pub(crate) fn split(text: &str) -> Result<(&str, Option<String>, Attributes), SignError> {
    let Some((backend, rest)) = text.split_once(':') else {
        return Err(spec_error(format!(
            "`{text}` names no backend; use `local:PATH`, `aws-kms:KEY` or `pkcs11:module=…;token=…;key=…`"
        )));
    };
    let (path_part, query) = match backend {
        // Only PKCS#11 URIs have a query part; a `?` elsewhere belongs to the value.
        "pkcs11" => rest.split_once('?').unwrap_or((rest, "")),
        _ => (rest, ""),
    };
    let mut positional = None;
    let mut attributes = Vec::new();
    let items = path_part.split(';').map(|item| (item, ';'));
    let queries = query.split('&').map(|item| (item, '&'));
    for (index, (item, _)) in items.chain(queries).enumerate() {
        if item.is_empty() {
            continue;
        }
        match item.split_once('=') {
            Some((name, value)) if backend != "local" || index > 0 || is_attribute(name) => {
                let name = name.to_ascii_lowercase();
                // A CKA_ID is bytes, not text: it is decoded on its own.
                let value = if name == "id" {
                    value.to_string()
                } else {
                    percent_decode(value)?
                };
                attributes.push((name, value));
            }
            _ if index == 0 => positional = Some(percent_decode(item)?),
            _ => {
                return Err(spec_error(format!(
                    "`{item}` is not `name=value` (a bare value may only come first)"
                )))
            }
        }
    }
    Ok((backend, positional, Attributes(attributes)))
}

/// The attributes that name a token and its PIN, shared by the signer and the vault's master
/// key.
pub(crate) struct TokenAttributes {
    pub module: PathBuf,
    pub token: Option<String>,
    pub slot: Option<u64>,
    pub pin: PinSource,
}

pub(crate) struct Attributes(Vec<(String, String)>);

impl Attributes {
    /// `module=` (or `module-path=`), `token=`, `slot-id=` and where the PIN comes from.
    pub(crate) fn token(&mut self) -> Result<TokenAttributes, SignError> {
        if self.take("pin-value").is_some() {
            return Err(spec_error(
                "a PIN is not taken from the spec; use `pin-env=VAR` or `pin-file=PATH`",
            ));
        }
        let module = self
        .take("module")
        .or_else(|| self.take("module-path"))
        .ok_or_else(|| {
            spec_error("`pkcs11:` needs `module=PATH` (the token's PKCS#11 library, such as /usr/lib/softhsm/libsofthsm2.so)")
        })?;
        let pin = match (
            self.take("pin-env"),
            self.take("pin-file"),
            self.take("pin-source"),
        ) {
            (Some(var), None, None) => PinSource::Env(var),
            (None, Some(path), None) => PinSource::File(PathBuf::from(path)),
            (None, None, Some(source)) => match source.strip_prefix("file:") {
                Some(path) => PinSource::File(PathBuf::from(path)),
                None => PinSource::File(PathBuf::from(source)),
            },
            (None, None, None) => PinSource::Env(DEFAULT_PIN_ENV.to_string()),
            _ => {
                return Err(spec_error(
                    "name one of `pin-env`, `pin-file` and `pin-source`",
                ))
            }
        };
        let slot = match self.take("slot-id") {
            Some(slot) => Some(
                slot.parse::<u64>()
                    .map_err(|_| spec_error(format!("`slot-id={slot}` is not a slot number")))?,
            ),
            None => None,
        };
        Ok(TokenAttributes {
            module: PathBuf::from(module),
            token: self.take("token"),
            slot,
            pin,
        })
    }

    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        let index = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(index).1)
    }

    fn scheme(&mut self) -> Result<Scheme, SignError> {
        match self.take("scheme").as_deref() {
            None | Some("pkcs1" | "rsassa-pkcs1v15-sha256") => Ok(Scheme::RsassaPkcs1v15Sha256),
            Some("pss" | "rsassa-pss-sha256") => Ok(Scheme::RsassaPssSha256),
            Some(other) => Err(spec_error(format!(
                "`scheme={other}`; use `rsassa-pkcs1v15-sha256` (`pkcs1`) or `rsassa-pss-sha256` (`pss`)"
            ))),
        }
    }

    /// Refuses what was not understood (a misspelt `regoin=` must not be ignored), and repeats.
    pub(crate) fn finish(self, backend: &str) -> Result<(), SignError> {
        match self.0.first() {
            None => Ok(()),
            Some((name, _)) => Err(spec_error(format!(
                "`{name}` is not an attribute of `{backend}:` here (unknown, or given twice)"
            ))),
        }
    }
}

fn parse_seconds(name: &str, text: &str) -> Result<Duration, SignError> {
    let digits = text.strip_suffix('s').unwrap_or(text);
    match digits.parse::<u64>() {
        Ok(seconds) if (1..=600).contains(&seconds) => Ok(Duration::from_secs(seconds)),
        _ => Err(spec_error(format!(
            "`{name}={text}`; use whole seconds from 1 to 600, as in `{name}=10s`"
        ))),
    }
}

/// More replicas than this is a typo, not a deployment (KMS has fewer regions than that to
/// replicate a key to in any one partition that a guard would use).
const MAX_REPLICAS: usize = 16;

/// An AWS region name: lowercase letters, digits and dashes (`eu-west-1`, `us-gov-west-1`).
fn check_region(region: String) -> Result<String, SignError> {
    let ok = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(region)
    } else {
        Err(spec_error(format!("`{region}` is not an AWS region name")))
    }
}

fn check_endpoint(endpoint: String) -> Result<String, SignError> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.chars().any(char::is_whitespace) => Ok(endpoint),
        _ => Err(spec_error(format!(
            "`{endpoint}` is not an endpoint URL (`https://HOST[:PORT]`)"
        ))),
    }
}

/// `REGION[@ENDPOINT],…`: each replica once, and never the primary.
fn parse_replicas(primary: &str, text: &str) -> Result<Vec<KmsReplica>, SignError> {
    let mut replicas: Vec<KmsReplica> = Vec::new();
    for item in text.split(',').map(str::trim) {
        let (region, endpoint) = match item.split_once('@') {
            Some((region, endpoint)) => (region, Some(check_endpoint(endpoint.to_string())?)),
            None => (item, None),
        };
        let region = check_region(region.to_string())?;
        if region == primary || replicas.iter().any(|r| r.region == region) {
            return Err(spec_error(format!(
                "`replicas=`: region `{region}` is named twice (the primary is `{primary}`)"
            )));
        }
        replicas.push(KmsReplica { region, endpoint });
    }
    if replicas.len() > MAX_REPLICAS {
        return Err(spec_error(format!(
            "`replicas=` names {} regions; at most {MAX_REPLICAS}",
            replicas.len()
        )));
    }
    Ok(replicas)
}

/// `%XX` escapes decoded; the result must be UTF-8 (paths, labels and names all are here).
fn percent_decode(text: &str) -> Result<String, SignError> {
    String::from_utf8(percent_bytes(text)?)
        .map_err(|_| spec_error(format!("`{text}` does not decode to UTF-8")))
}

fn percent_bytes(text: &str) -> Result<Vec<u8>, SignError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| spec_error(format!("`{text}` has a `%` that is not `%XX`")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

/// A CKA_ID: RFC 7512 writes it percent-encoded (`%01%02`); plain hex (`0102`) is accepted too.
fn decode_id(id: &str) -> Result<Vec<u8>, SignError> {
    if id.contains('%') {
        return percent_bytes(id);
    }
    let is_hex = id.len() % 2 == 0 && !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let pairs = id.as_bytes().chunks(2);
        let decoded: Option<Vec<u8>> = pairs
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        if let Some(bytes) = decoded {
            return Ok(bytes);
        }
    }
    Ok(id.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SignerSpec {
        text.parse().unwrap()
    }

    fn refused(text: &str) -> String {
        match text.parse::<SignerSpec>() {
            Err(SignError::Spec(message)) => message,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn local_takes_a_path_and_a_scheme() {
        let SignerSpec::Local { path, scheme } = parse("local:keys/a=b.pem") else {
            panic!()
        };
        assert_eq!(path, PathBuf::from("keys/a=b.pem"));
        assert_eq!(scheme, Scheme::RsassaPkcs1v15Sha256);
        let SignerSpec::Local { path, scheme } = parse("local:keys/k%3B1.pem;scheme=pss") else {
            panic!()
        };
        assert_eq!(path, PathBuf::from("keys/k;1.pem"));
        assert_eq!(scheme, Scheme::RsassaPssSha256);
        assert!(refused("local:").contains("needs the key file"));
    }

    #[test]
    fn aws_kms_takes_aliases_arns_and_options() {
        let SignerSpec::AwsKms(o) = parse(
            "aws-kms:arn:aws:kms:eu-west-1:111122223333:alias/sigil;endpoint=http://127.0.0.1:4566;region=eu-west-1;timeout=5s;scheme=rsassa-pss-sha256",
        ) else {
            panic!()
        };
        assert_eq!(o.key, "arn:aws:kms:eu-west-1:111122223333:alias/sigil");
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(o.scheme, Scheme::RsassaPssSha256);
        let SignerSpec::AwsKms(o) = parse("aws-kms:alias/sigil-templates") else {
            panic!()
        };
        assert_eq!(o.key, "alias/sigil-templates");
        assert!(refused("aws-kms:alias/x;regoin=eu-west-1").contains("`regoin`"));
        assert!(refused("aws-kms:alias/x;timeout=0").contains("timeout"));
        assert!(refused("aws-kms:").contains("needs a key"));
    }

    #[test]
    fn aws_kms_takes_replica_regions_with_their_endpoints() {
        let SignerSpec::AwsKms(o) = parse(
            "aws-kms:alias/sigil-vault;region=us-east-1;endpoint=http://127.0.0.1:1;replicas=eu-west-1@http://127.0.0.1:2,ap-southeast-2;failback=5s",
        ) else {
            panic!()
        };
        assert_eq!(o.region.as_deref(), Some("us-east-1"));
        assert_eq!(
            o.replicas,
            vec![
                KmsReplica {
                    region: "eu-west-1".into(),
                    endpoint: Some("http://127.0.0.1:2".into())
                },
                KmsReplica {
                    region: "ap-southeast-2".into(),
                    endpoint: None
                },
            ]
        );
        assert_eq!(o.failback, Duration::from_secs(5));
        let SignerSpec::AwsKms(o) = parse("aws-kms:alias/x") else {
            panic!()
        };
        assert!(o.replicas.is_empty());
        assert!(refused("aws-kms:alias/x;replicas=eu-west-1").contains("`region=`"));
        for bad in [
            "aws-kms:alias/x;region=us-east-1;replicas=us-east-1",
            "aws-kms:alias/x;region=us-east-1;replicas=eu-west-1,eu-west-1",
            "aws-kms:alias/x;region=us-east-1;replicas=",
            "aws-kms:alias/x;region=us-east-1;replicas=,",
            "aws-kms:alias/x;region=us-east-1;replicas=EU_WEST",
            "aws-kms:alias/x;region=us-east-1;replicas=eu-west-1@ftp://h",
            "aws-kms:alias/x;region=us-east-1;replicas=eu-west-1@",
            "aws-kms:alias/x;region=us-east-1;replicas=@http://h",
            "aws-kms:alias/x;region=../../etc",
            "aws-kms:alias/x;endpoint=127.0.0.1:4566",
            "aws-kms:alias/x;region=us-east-1;failback=0",
            "aws-kms:alias/x;region=us-east-1;failback=9999999999999999999999",
        ] {
            assert!(bad.parse::<SignerSpec>().is_err(), "{bad}");
        }
        let many = (0..17)
            .map(|i| format!("r{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            refused(&format!("aws-kms:alias/x;region=us-east-1;replicas={many}"))
                .contains("at most")
        );
    }

    #[test]
    fn pkcs11_takes_attributes_and_rfc7512_uris() {
        let SignerSpec::Pkcs11(o) =
            parse("pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=sigil;key=templates")
        else {
            panic!()
        };
        assert_eq!(o.module, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(o.token.as_deref(), Some("sigil"));
        assert_eq!(o.key_label.as_deref(), Some("templates"));
        assert_eq!(o.pin, PinSource::Env(DEFAULT_PIN_ENV.into()));
        assert_eq!(o.mechanism, Pkcs11Mechanism::Auto);
        let SignerSpec::Pkcs11(o) = parse(
            "pkcs11:token=my%20token;object=k;id=%01%AB;type=private?module-path=/opt/p11.so&pin-source=file:/run/pin",
        ) else {
            panic!()
        };
        assert_eq!(o.module, PathBuf::from("/opt/p11.so"));
        assert_eq!(o.token.as_deref(), Some("my token"));
        assert_eq!(o.key_id, Some(vec![0x01, 0xab]));
        assert_eq!(o.pin, PinSource::File(PathBuf::from("/run/pin")));
        let SignerSpec::Pkcs11(o) = parse("pkcs11:module=m.so;id=0a0b;mechanism=rsa;pin-env=P")
        else {
            panic!()
        };
        assert_eq!(o.key_id, Some(vec![0x0a, 0x0b]));
        assert_eq!(o.mechanism, Pkcs11Mechanism::Rsa);
        assert_eq!(o.pin, PinSource::Env("P".into()));
        assert!(refused("pkcs11:module=m.so;key=k;pin-value=1234").contains("pin-env"));
        assert!(refused("pkcs11:token=t;key=k").contains("module=PATH"));
        assert!(refused("pkcs11:module=m.so;token=t").contains("needs the key"));
        assert!(refused("pkcs11:module=m.so;key=k;type=public").contains("private"));
    }

    #[test]
    fn unknown_backends_and_bad_escapes_are_refused() {
        assert!(refused("vault:k").contains("unknown backend"));
        assert!(refused("keys/signing-key.pem").contains("names no backend"));
        assert!(refused("local:a%zz.pem").contains("%XX"));
        assert!(refused("local:a.pem;scheme=ecdsa").contains("scheme=ecdsa"));
    }
}

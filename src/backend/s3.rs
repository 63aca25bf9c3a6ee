//! S3 and S3-compatible object stores (AWS, MinIO, Garage, Ceph RGW, R2, B2, Wasabi), on the
//! official `aws-sdk-s3`. Selected by `--repo s3://BUCKET/PREFIX`.
//!
//! Keys mirror the local layout under PREFIX: `config`, `keys/<id>`, `data/<xx>/<id>`,
//! `index/<id>`, `snapshots/<id>`, `locks/<id>`.
//!
//! - Configuration: endpoint, region, path-style addressing, storage class and checksum mode
//!   come from [`S3Options`] (the CLI fills it from flags or `DUMPVAULT_S3_*` variables);
//!   credentials come from the standard AWS chain (environment, profile, web identity,
//!   instance role), so what works for the `aws` CLI works here.
//! - Integrity: every PUT carries Content-MD5, so the store rejects a body damaged in transit.
//!   The SDK's newer default CRC checksums are off unless `checksum = crc32`, because several
//!   S3-compatible stores reject them.
//! - No overwrite: on AWS (no custom endpoint) PUTs send `If-None-Match: *`; a 412 means the
//!   object exists, which for content-named objects means success, and a 501 switches to
//!   HEAD-before-PUT. On custom endpoints the default is HEAD-before-PUT, because some stores
//!   (Garage, for one) accept the header and silently ignore it. Either can be forced with
//!   `DUMPVAULT_S3_CONDITIONAL_WRITES=true|false`. Overwriting a content-named object with the
//!   same bytes would be harmless anyway; the rule guards against a damaged local copy
//!   replacing a good stored one.
//! - Objects above `multipart_threshold` go up as multipart uploads, aborted on failure, so an
//!   interrupted upload never leaves an object under the final name.
//! - Object Lock (`DUMPVAULT_S3_OBJECT_LOCK_DAYS`, `backup --s3-object-lock-days N`): PUTs of
//!   packs, index files and snapshots carry `x-amz-object-lock-mode` (COMPLIANCE, or
//!   `DUMPVAULT_S3_OBJECT_LOCK_MODE=governance`) and a retain-until date N days ahead, so not
//!   even full credentials can delete them before then. The bucket must have Object Lock
//!   enabled; AWS also requires Content-MD5 (the default checksum mode) on such PUTs. Locks,
//!   keys, the config and drill records are not retained: locks must be removable, and the
//!   others are not what a ransomware attack needs to destroy to make restores impossible.
//! - Retries: the SDK's standard retry mode (exponential backoff with jitter) on 5xx,
//!   throttling and connection errors, up to `max_attempts`, inside an overall operation
//!   timeout. 403 and 404 are not retried and fail with a clear message.
//! - Calls are blocking (the trait is synchronous); a private tokio runtime runs the SDK.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ObjectLockMode, StorageClass};
use aws_sdk_s3::Client;
use base64::Engine;
use md5::{Digest, Md5};

use super::{Backend, Name};
use crate::error::{Error, ObjectKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    /// Content-MD5 on every PUT (default; understood by every S3-compatible store).
    Md5,
    /// The SDK's CRC32 flexible checksums, in addition.
    Crc32,
    /// Neither (for stores that reject both; integrity then rests on BLAKE3 names and AEAD).
    None,
}

#[derive(Debug, Clone)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub storage_class: Option<String>,
    pub checksum: ChecksumMode,
    /// `Some(true)`: always send If-None-Match; `Some(false)`: never (HEAD then PUT);
    /// `None`: try it and fall back if the store does not implement it.
    pub conditional_writes: Option<bool>,
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub max_attempts: u32,
    pub operation_timeout: Duration,
    pub upload_concurrency: usize,
    /// Object Lock retention for packs, index files and snapshots: mode and days.
    pub object_lock: Option<(ObjectLockMode, u32)>,
}

/// `backup --s3-object-lock-days`: the backend is opened from a location string and the
/// environment (`backend::open`), so the flag reaches it through this process-wide value,
/// which takes precedence over `DUMPVAULT_S3_OBJECT_LOCK_DAYS`. 0: not set.
static OBJECT_LOCK_DAYS: AtomicU32 = AtomicU32::new(0);

/// Bound every S3 call of this process to `secs` seconds, retries included (`wal push` and
/// `wal fetch` use it: a hung request must never stall archiving or recovery). 0: not set,
/// `DUMPVAULT_S3_TIMEOUT` or the 15-minute default applies.
static OPERATION_TIMEOUT_SECS: AtomicU32 = AtomicU32::new(0);

pub fn set_operation_timeout_secs(secs: u32) {
    OPERATION_TIMEOUT_SECS.store(secs, Ordering::Relaxed);
}

/// Retain the objects this process writes for `days` days (see the module doc).
pub fn set_object_lock_days(days: u32) {
    OBJECT_LOCK_DAYS.store(days, Ordering::Relaxed);
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            path_style: None,
            storage_class: None,
            checksum: ChecksumMode::Md5,
            conditional_writes: None,
            multipart_threshold: 64 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            max_attempts: 8,
            operation_timeout: Duration::from_secs(15 * 60),
            upload_concurrency: 4,
            object_lock: None,
        }
    }
}

impl S3Options {
    /// Fill unset fields from `DUMPVAULT_S3_*` variables.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut o = S3Options {
            endpoint: var("DUMPVAULT_S3_ENDPOINT"),
            region: var("DUMPVAULT_S3_REGION"),
            storage_class: var("DUMPVAULT_S3_STORAGE_CLASS"),
            ..Default::default()
        };
        if let Some(v) = var("DUMPVAULT_S3_PATH_STYLE") {
            o.path_style = Some(parse_bool("DUMPVAULT_S3_PATH_STYLE", &v)?);
        }
        if let Some(v) = var("DUMPVAULT_S3_CHECKSUM") {
            o.checksum = match v.as_str() {
                "md5" => ChecksumMode::Md5,
                "crc32" => ChecksumMode::Crc32,
                "none" => ChecksumMode::None,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "DUMPVAULT_S3_CHECKSUM={v}: use md5, crc32 or none"
                    )))
                }
            };
        }
        if let Some(v) = var("DUMPVAULT_S3_CONDITIONAL_WRITES") {
            o.conditional_writes = match v.as_str() {
                "auto" => None,
                other => Some(parse_bool("DUMPVAULT_S3_CONDITIONAL_WRITES", other)?),
            };
        }
        if let Some(v) = var("DUMPVAULT_S3_TIMEOUT") {
            let secs: u64 =
                v.parse().ok().filter(|&s| s > 0).ok_or_else(|| {
                    Error::InvalidInput(format!("DUMPVAULT_S3_TIMEOUT={v}: seconds"))
                })?;
            o.operation_timeout = Duration::from_secs(secs);
        }
        match OPERATION_TIMEOUT_SECS.load(Ordering::Relaxed) {
            0 => {}
            s => o.operation_timeout = o.operation_timeout.min(Duration::from_secs(u64::from(s))),
        }
        if let Some(v) = var("DUMPVAULT_S3_MAX_ATTEMPTS") {
            o.max_attempts = v
                .parse()
                .map_err(|_| Error::InvalidInput(format!("DUMPVAULT_S3_MAX_ATTEMPTS={v}")))?;
        }
        let days = match (
            OBJECT_LOCK_DAYS.load(Ordering::Relaxed),
            var("DUMPVAULT_S3_OBJECT_LOCK_DAYS"),
        ) {
            (0, None) => 0,
            (0, Some(v)) => v.parse().map_err(|_| {
                Error::InvalidInput(format!(
                    "DUMPVAULT_S3_OBJECT_LOCK_DAYS={v}: use a number of days"
                ))
            })?,
            (d, _) => d,
        };
        if days > 0 {
            let mode = match var("DUMPVAULT_S3_OBJECT_LOCK_MODE").as_deref() {
                None | Some("compliance") | Some("COMPLIANCE") => ObjectLockMode::Compliance,
                Some("governance") | Some("GOVERNANCE") => ObjectLockMode::Governance,
                Some(v) => {
                    return Err(Error::InvalidInput(format!(
                        "DUMPVAULT_S3_OBJECT_LOCK_MODE={v}: use compliance or governance"
                    )))
                }
            };
            o.object_lock = Some((mode, days));
        }
        Ok(o)
    }
}

fn parse_bool(k: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::InvalidInput(format!("{k}={v}: use true or false"))),
    }
}

pub struct S3Backend {
    rt: tokio::runtime::Runtime,
    client: Client,
    bucket: String,
    prefix: String,
    opts: S3Options,
    /// 0 unknown, 1 the store honours If-None-Match, 2 it does not (use HEAD first).
    conditional: AtomicU8,
}

fn backend_err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    what: &str,
    key: &str,
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e
        .as_service_error()
        .and_then(|s| s.code().map(str::to_string));
    let msg = e
        .as_service_error()
        .and_then(|s| s.message().map(str::to_string));
    let hint = match status {
        Some(403) => " (access denied: check the credentials and the bucket policy)",
        Some(404) => " (no such bucket or key)",
        Some(301) | Some(400) if code.as_deref() == Some("AuthorizationHeaderMalformed") => {
            " (wrong region?)"
        }
        _ => "",
    };
    let detail = match (status, code, msg) {
        (Some(s), Some(c), Some(m)) => format!("HTTP {s} {c}: {m}"),
        (Some(s), Some(c), None) => format!("HTTP {s} {c}"),
        (Some(s), _, _) => format!("HTTP {s}"),
        _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(e)),
    };
    Error::Backend(format!("S3 {what} {key}: {detail}{hint}"))
}

impl S3Backend {
    /// `location` is `s3://BUCKET[/PREFIX]`.
    pub fn open(location: &str, opts: S3Options) -> Result<S3Backend> {
        let rest = location
            .strip_prefix("s3://")
            .ok_or_else(|| Error::InvalidInput(format!("not an s3:// location: {location}")))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
            None => (rest.to_string(), String::new()),
        };
        if bucket.is_empty() {
            return Err(Error::InvalidInput(format!("no bucket in {location}")));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("s3")
            .build()
            .map_err(|e| Error::io("start the S3 runtime", e))?;
        let client = rt.block_on(async {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(r) = opts.region.clone() {
                loader = loader.region(Region::new(r));
            }
            let shared = loader.load().await;
            let mut b = aws_sdk_s3::config::Builder::from(&shared)
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(opts.max_attempts.max(1))
                        .with_initial_backoff(Duration::from_millis(200))
                        .with_max_backoff(Duration::from_secs(20)),
                )
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(10))
                        .operation_attempt_timeout(
                            Duration::from_secs(300).min(opts.operation_timeout),
                        )
                        .operation_timeout(opts.operation_timeout)
                        .build(),
                );
            if shared.region().is_none() {
                b = b.region(Region::new("us-east-1"));
            }
            if let Some(ep) = &opts.endpoint {
                b = b.endpoint_url(ep);
            }
            // Custom endpoints (MinIO, Garage, Ceph) mostly need path-style addressing.
            b = b.force_path_style(opts.path_style.unwrap_or(opts.endpoint.is_some()));
            let (req, resp) = match opts.checksum {
                ChecksumMode::Crc32 => (
                    RequestChecksumCalculation::WhenSupported,
                    ResponseChecksumValidation::WhenSupported,
                ),
                _ => (
                    RequestChecksumCalculation::WhenRequired,
                    ResponseChecksumValidation::WhenRequired,
                ),
            };
            b = b
                .request_checksum_calculation(req)
                .response_checksum_validation(resp);
            Client::from_conf(b.build())
        });
        // AWS S3 honours If-None-Match on PUT; several S3-compatible stores (Garage among them)
        // silently ignore it, which cannot be detected. So: conditional writes on AWS, HEAD
        // before PUT on custom endpoints, unless configured otherwise.
        let conditional = match opts.conditional_writes {
            Some(true) => 1,
            Some(false) => 2,
            None if opts.endpoint.is_some() => 2,
            None => 0,
        };
        Ok(S3Backend {
            rt,
            client,
            bucket,
            prefix,
            opts,
            conditional: AtomicU8::new(conditional),
        })
    }

    fn dir(kind: ObjectKind) -> &'static str {
        match kind {
            ObjectKind::Config => "",
            ObjectKind::Key => "keys/",
            ObjectKind::Pack => "data/",
            ObjectKind::Index => "index/",
            ObjectKind::Snapshot => "snapshots/",
            ObjectKind::Lock => "locks/",
            ObjectKind::Verification => "verifications/",
            ObjectKind::Wal => "wal/",
        }
    }

    fn base(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    fn key(&self, kind: ObjectKind, name: &str) -> String {
        match kind {
            ObjectKind::Config => format!("{}config", self.base()),
            ObjectKind::Pack if name.len() >= 2 => {
                format!("{}data/{}/{}", self.base(), &name[..2], name)
            }
            _ => format!("{}{}{}", self.base(), Self::dir(kind), name),
        }
    }

    fn head(&self, key: &str) -> Result<Option<u64>> {
        self.rt.block_on(async {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
                Err(e) => Err(backend_err("HEAD", key, &e)),
            }
        })
    }

    /// Object Lock mode and retain-until date for an object of `kind`, if it is retained.
    fn retention(
        &self,
        kind: ObjectKind,
    ) -> Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)> {
        let (mode, days) = self.opts.object_lock.clone()?;
        if !matches!(
            kind,
            ObjectKind::Pack | ObjectKind::Index | ObjectKind::Snapshot
        ) {
            return None;
        }
        let until = std::time::SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);
        Some((mode, aws_sdk_s3::primitives::DateTime::from(until)))
    }

    fn md5_b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
    }

    /// GET a whole object or a range of it; 404 is `ObjectNotFound`, 416 (range beyond the
    /// end) is damage.
    fn fetch(&self, kind: ObjectKind, name: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
        let key = self.key(kind, name);
        self.rt.block_on(async {
            let mut req = self.client.get_object().bucket(&self.bucket).key(&key);
            if let Some((offset, len)) = range {
                req = req.range(format!("bytes={}-{}", offset, offset + len - 1));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                    Some(404) => {
                        return Err(Error::ObjectNotFound {
                            kind,
                            id: name.to_string(),
                        })
                    }
                    Some(416) => {
                        return Err(Error::corrupt(
                            kind,
                            name,
                            format!("range {range:?} beyond the object (truncated?)"),
                        ))
                    }
                    _ => return Err(backend_err("GET", &key, &e)),
                },
            };
            let body = resp
                .body
                .collect()
                .await
                .map_err(|e| Error::Backend(format!("S3 GET {key}: reading the body: {e}")))?;
            Ok(body.into_bytes().to_vec())
        })
    }

    async fn put_single(
        &self,
        kind: ObjectKind,
        key: &str,
        data: &[u8],
        conditional: bool,
    ) -> Result<PutOutcome> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(data.to_vec()));
        if self.opts.checksum != ChecksumMode::None {
            req = req.content_md5(Self::md5_b64(data));
        }
        if let Some(sc) = &self.opts.storage_class {
            req = req.storage_class(StorageClass::from(sc.as_str()));
        }
        if conditional {
            req = req.if_none_match("*");
        }
        if let Some((mode, until)) = self.retention(kind) {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        match req.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                // 412: the object exists (content-named: same bytes). Not 409: on AWS that
                // means a concurrent conditional write is in flight and may yet fail.
                Some(412) if conditional => Ok(PutOutcome::Existed),
                Some(501) if conditional => Ok(PutOutcome::Unsupported),
                _ => Err(backend_err("PUT", key, &e)),
            },
        }
    }

    async fn put_multipart(&self, kind: ObjectKind, key: &str, data: &[u8]) -> Result<()> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key);
        if let Some(sc) = &self.opts.storage_class {
            create = create.storage_class(StorageClass::from(sc.as_str()));
        }
        if let Some((mode, until)) = self.retention(kind) {
            create = create
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        let up = create
            .send()
            .await
            .map_err(|e| backend_err("CreateMultipartUpload", key, &e))?;
        let id = up
            .upload_id()
            .ok_or_else(|| Error::Backend(format!("S3 multipart upload of {key}: no upload id")))?
            .to_string();
        let result = async {
            let mut parts = Vec::new();
            for (i, chunk) in data.chunks(self.opts.part_size as usize).enumerate() {
                let n = i as i32 + 1;
                let mut req = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&id)
                    .part_number(n)
                    .body(ByteStream::from(chunk.to_vec()));
                if self.opts.checksum != ChecksumMode::None {
                    req = req.content_md5(Self::md5_b64(chunk));
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| backend_err("UploadPart", key, &e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| backend_err("CompleteMultipartUpload", key, &e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Nothing appears under the final name; free the parts.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&id)
                .send()
                .await;
        }
        result
    }
}

enum PutOutcome {
    Written,
    Existed,
    Unsupported,
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn exists(&self) -> Result<bool> {
        Ok(self
            .head(&self.key(ObjectKind::Config, "config"))?
            .is_some())
    }

    fn create(&self) -> Result<()> {
        // The bucket must exist (creating buckets needs rights a backup key should not have);
        // check it is reachable and that no repository lives under the prefix.
        self.rt.block_on(async {
            self.client
                .head_bucket()
                .bucket(&self.bucket)
                .send()
                .await
                .map_err(|e| backend_err("HeadBucket", &self.bucket, &e))
        })?;
        if self.exists()? {
            return Err(Error::RepositoryExists(self.location()));
        }
        Ok(())
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(Name, u64)>> {
        let prefix = match kind {
            ObjectKind::Config => self.key(kind, "config"),
            _ => format!("{}{}", self.base(), Self::dir(kind)),
        };
        let mut out = Vec::new();
        self.rt.block_on(async {
            let mut token: Option<String> = None;
            loop {
                let resp = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| backend_err("LIST", &prefix, &e))?;
                for o in resp.contents() {
                    let Some(k) = o.key() else { continue };
                    let name = if kind == ObjectKind::Wal {
                        let n = k.strip_prefix(prefix.as_str()).unwrap_or(k);
                        if !super::valid_wal_name(n) {
                            continue;
                        }
                        n
                    } else {
                        k.rsplit('/').next().unwrap_or(k)
                    };
                    if !matches!(kind, ObjectKind::Config | ObjectKind::Wal)
                        && (name.len() != 64 || name.starts_with('.'))
                    {
                        continue;
                    }
                    out.push((name.to_string(), o.size().unwrap_or(0).max(0) as u64));
                }
                match resp.next_continuation_token() {
                    Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            Ok::<(), Error>(())
        })?;
        out.sort();
        Ok(out)
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.fetch(kind, name, None)
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.fetch(kind, name, Some((offset, len)))?;
        if bytes.len() as u64 != len {
            return Err(Error::corrupt(
                kind,
                name,
                format!(
                    "range {offset}+{len} returned {} bytes (truncated?)",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
        self.head(&self.key(kind, name))?
            .ok_or_else(|| Error::ObjectNotFound {
                kind,
                id: name.to_string(),
            })
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        let key = self.key(kind, name);
        self.rt.block_on(async {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
            {
                // `LastModified` is the store's clock, so client clock skew does not enter.
                Ok(o) => Ok(o
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                    Err(Error::ObjectNotFound {
                        kind,
                        id: name.to_string(),
                    })
                }
                Err(e) => Err(backend_err("HEAD", &key, &e)),
            }
        })
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        let key = self.key(kind, name);
        if data.len() as u64 > self.opts.multipart_threshold {
            // Multipart completion cannot be made conditional everywhere: check first.
            if self.head(&key)?.is_some() {
                return Ok(());
            }
            return self.rt.block_on(self.put_multipart(kind, &key, data));
        }
        loop {
            match self.conditional.load(Ordering::Relaxed) {
                2 => {
                    if self.head(&key)?.is_some() {
                        return Ok(());
                    }
                    return self
                        .rt
                        .block_on(self.put_single(kind, &key, data, false))
                        .map(|_| ());
                }
                state => match self.rt.block_on(self.put_single(kind, &key, data, true))? {
                    PutOutcome::Written | PutOutcome::Existed => {
                        if state == 0 {
                            self.conditional.store(1, Ordering::Relaxed);
                        }
                        return Ok(());
                    }
                    PutOutcome::Unsupported => {
                        if state == 1 {
                            return Err(Error::Backend(format!(
                                "S3 PUT {key}: the store does not implement conditional writes (If-None-Match); set DUMPVAULT_S3_CONDITIONAL_WRITES=false"
                            )));
                        }
                        self.conditional.store(2, Ordering::Relaxed);
                    }
                },
            }
        }
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        let key = self.key(kind, name);
        self.rt.block_on(async {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| backend_err("DELETE", &key, &e))
        })
    }

    fn upload_concurrency(&self) -> usize {
        self.opts.upload_concurrency.max(1)
    }
    fn read_concurrency(&self) -> usize {
        // Ranged GETs are latency-bound: keep many in flight.
        16
    }
}

//! Response decoding as the platform does it (SPEC section 3, "what an allowed call gets"): for
//! text and JSON responses, one leading UTF-8 BOM removed and a declared non-UTF-8 charset
//! converted to UTF-8, with `Content-Type` and `Content-Length` fixed to match.
//!
//! # Which responses
//! Only a `Content-Type` of `text/*`, `application/json`, `application/*+json`,
//! `application/javascript` (also `x-javascript`, `ecmascript`), `application/xml` or
//! `application/*+xml`: the mini program receives these as strings, and JavaScript and XML declare
//! their charset the same way JSON does. Everything else (images, octet streams, no
//! `Content-Type` at all) passes untouched and unpolled: the cost is a header look-up. A body with
//! a `Content-Encoding` other than `identity` (gzip, br...) is also left alone: its bytes are not
//! the text, and the client decompresses before the platform would decode.
//!
//! # The rules
//! * A `charset=` parameter names the encoding (any label of the WHATWG Encoding Standard, as
//!   encoding_rs knows them: GBK, GB2312, GB18030, Big5, Shift_JIS, EUC-KR, ISO-8859-x,
//!   windows-125x, UTF-16...); no parameter means UTF-8. An unknown label is refused (602302):
//!   the platform can't convert it either.
//! * One leading BOM is removed, never two. A leading UTF-8 BOM (EF BB BF) wins over the declared
//!   charset, as the WHATWG "decode" algorithm (and so DevTools' XHR) does: a file saved "UTF-8
//!   with BOM" by an editor and served as `charset=gbk` is UTF-8. A body in a declared UTF-16 loses
//!   its own BOM (a leading U+FEFF after conversion).
//! * UTF-8 bodies (declared, or found by their BOM) are not validated: only the BOM goes.
//!
//! # Buffered or streamed
//! UTF-8 bodies always stream. With a known length, the first 3 bytes are awaited before the head
//! is answered so that `Content-Length` stays exact (3 less when a BOM went).
//! A body to convert with a known length up to [`BUFFER_LIMIT`] is read and converted whole, so
//! one that doesn't match its charset is refused (502/602302, the `Err` detail) before anything
//! is sent, and the new `Content-Length` is exact. A larger or chunked one is converted frame by
//! frame as it streams, without `Content-Length`: a bad byte sequence found mid-stream ends the
//! body with an error, which closes the client's connection (the head is already sent).
//! An empty body (HEAD, 204, 304) keeps its `Content-Length`, which describes another response.
//! An upstream read error is not a charset failure: it is passed on as a body error.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use encoding_rs::{Decoder, DecoderResult, Encoding, REPLACEMENT, UTF_8};
use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::web::body::{self, Body, BoxError};

/// Largest body with a known length that is converted whole (and refused whole when its bytes
/// don't match its charset); longer ones are converted as they stream. Bounds the memory of one
/// call to about four times this (the bytes and their UTF-8).
pub const BUFFER_LIMIT: u64 = 8 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What a `Content-Type` asks for.
struct TextType<'a> {
    /// The `charset` parameter as sent (unquoted), if any.
    charset: Option<&'a str>,
}

/// Is this a text or JSON type (see the module doc), and which charset does it declare?
/// Every response's type is looked at: the types servers send most, spelled as they send them,
/// are answered by one compare (`common_types_agree_with_the_parser` holds the two together),
/// the rest parsed.
fn text_type(content_type: &str) -> Option<TextType<'_>> {
    match content_type.as_bytes() {
        b"application/json"
        | b"text/plain"
        | b"text/html"
        | b"application/javascript"
        | b"text/javascript"
        | b"text/css"
        | b"application/xml"
        | b"text/xml" => Some(TextType { charset: None }),
        b"application/json; charset=utf-8"
        | b"application/json;charset=utf-8"
        | b"application/json; charset=UTF-8"
        | b"application/json;charset=UTF-8"
        | b"text/plain; charset=utf-8"
        | b"text/plain;charset=utf-8"
        | b"text/html; charset=utf-8"
        | b"text/html;charset=utf-8"
        | b"text/html; charset=UTF-8" => Some(TextType {
            charset: content_type.get(content_type.len() - "utf-8".len()..),
        }),
        b"application/octet-stream"
        | b"image/png"
        | b"image/jpeg"
        | b"image/gif"
        | b"image/webp"
        | b"image/svg+xml" => None,
        _ => parse_text_type(content_type),
    }
}

/// [`text_type`] by parsing: as bytes, in place.
fn parse_text_type(content_type: &str) -> Option<TextType<'_>> {
    let bytes = content_type.as_bytes();
    let end = bytes.iter().position(|&b| b == b';').unwrap_or(bytes.len());
    let essence = bytes[..end].trim_ascii();
    let slash = essence.iter().position(|&b| b == b'/')?;
    let (top, sub) = (&essence[..slash], &essence[slash + 1..]);
    let ends = |want: &[u8]| {
        sub.len() >= want.len() && sub[sub.len() - want.len()..].eq_ignore_ascii_case(want)
    };
    let is_text = top.eq_ignore_ascii_case(b"text")
        || (top.eq_ignore_ascii_case(b"application")
            && ([
                &b"json"[..],
                b"javascript",
                b"x-javascript",
                b"ecmascript",
                b"xml",
            ]
            .iter()
            .any(|w| sub.eq_ignore_ascii_case(w))
                || ends(b"+json")
                || ends(b"+xml")));
    if !is_text {
        return None;
    }
    let charset = content_type[end..].split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').trim())
    });
    Some(TextType { charset })
}

/// The same `Content-Type` with its charset parameter(s) set to utf-8, other parameters kept.
fn with_utf8_charset(content_type: &str) -> String {
    content_type
        .split(';')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.trim().eq_ignore_ascii_case("charset") => " charset=utf-8",
            _ => p,
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn compressed(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |s| {
            s.split(',')
                .any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"))
        })
    })
}

/// Decode `response` for the mini program (see the module doc); other responses come back as
/// they were, unpolled.
///
/// # Errors
/// The body can't be converted to UTF-8 and nothing was sent yet: its declared charset is unknown,
/// or a buffered body (known length up to [`BUFFER_LIMIT`]) has bytes that are not valid in it.
/// The `String` is the detail for the 602302 refusal.
pub async fn decode_response(response: Response<Body>) -> Result<Response<Body>, String> {
    // Owned copies, so that no borrow of the headers lives across the awaits below.
    let Some((content_type, label)) = declared_text(response.headers()) else {
        return Ok(response);
    };
    let encoding = match label.as_deref() {
        None => UTF_8,
        Some(label) => match Encoding::for_label(label.as_bytes()) {
            // The "replacement" encoding (ISO-2022-KR, HZ...) decodes every byte to U+FFFD.
            Some(e) if e != REPLACEMENT => e,
            _ if response.body().is_end_stream() => return Ok(response),
            _ => {
                return Err(format!(
                    "the response declares charset={label}, which can't be converted to UTF-8; \
                     send UTF-8 or a known charset"
                ))
            }
        },
    };
    let (mut parts, body) = response.into_parts();
    if encoding != UTF_8 {
        if let Ok(v) = HeaderValue::from_str(&with_utf8_charset(&content_type)) {
            parts.headers.insert(CONTENT_TYPE, v);
        }
    }
    if body.is_end_stream() {
        return Ok(Response::from_parts(parts, body));
    }
    let known = body.size_hint().exact().or_else(|| {
        parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
    });
    let converter = Converter::new(encoding, label.unwrap_or_else(|| "utf-8".to_owned()));
    match known {
        Some(length) if encoding == UTF_8 => {
            Ok(utf8_with_length(parts, body, converter, length).await)
        }
        Some(n) if n <= BUFFER_LIMIT => buffered(parts, body, converter).await,
        _ => {
            parts.headers.remove(CONTENT_LENGTH);
            Ok(Response::from_parts(
                parts,
                Decoded::new(body, converter).boxed_unsync(),
            ))
        }
    }
}

/// Would [`decode_response`] touch this response (uncompressed text)? Read before racing it,
/// so that the rest (bytes, images, JSON sent as octets) skip the race and its future.
pub fn may_decode(headers: &http::HeaderMap) -> bool {
    !compressed(headers)
        && headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(text_type)
            .is_some()
}

/// The Content-Type and declared charset of an uncompressed text response; `None` for
/// anything decoding leaves alone.
fn declared_text(headers: &http::HeaderMap) -> Option<(String, Option<String>)> {
    if compressed(headers) {
        return None;
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())?;
    let text = text_type(content_type)?;
    Some((content_type.to_owned(), text.charset.map(str::to_owned)))
}

/// UTF-8 with a known length: streamed, after the first bytes tell whether a BOM goes, so the
/// Content-Length sent is exact.
async fn utf8_with_length(
    mut parts: http::response::Parts,
    body: Body,
    converter: Converter,
    length: u64,
) -> Response<Body> {
    let mut decoded = Decoded::new(body, converter);
    let first = decoded.frame().await;
    let length = if decoded.converter.bom_stripped {
        length.saturating_sub(BOM.len() as u64)
    } else {
        length
    };
    decoded.replay(first, length);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    Response::from_parts(parts, decoded.boxed_unsync())
}

/// Another charset, at most [`BUFFER_LIMIT`] bytes: converted whole, so a bad byte is refused
/// before anything is sent, and the length is exact.
async fn buffered(
    mut parts: http::response::Parts,
    body: Body,
    mut converter: Converter,
) -> Result<Response<Body>, String> {
    let bytes = match read_whole(body).await {
        Ok(bytes) => bytes,
        Err(e) => {
            // Not a charset failure: the client sees the read error, as without decoding.
            parts.headers.remove(CONTENT_LENGTH);
            return Ok(Response::from_parts(parts, Failed(Some(e)).boxed_unsync()));
        }
    };
    let converted = converter.push(bytes, true).map_err(|m| m.to_string())?;
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(converted.len()));
    Ok(Response::from_parts(parts, body::full(converted)))
}

/// Read a body whose length is known to be at most [`BUFFER_LIMIT`], refusing to hold more
/// (the length may come from a header the body doesn't honour). Trailers are dropped: a body with
/// a Content-Length has none in HTTP/1.1.
async fn read_whole(mut body: Body) -> Result<Bytes, BoxError> {
    let mut whole = BytesMut::new();
    // Bounded by the frames of a body of at most BUFFER_LIMIT bytes (empty frames aside).
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if (whole.len() + data.len()) as u64 > BUFFER_LIMIT {
                return Err("the response body is longer than its Content-Length".into());
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

/// Bytes that are not valid in the declared charset.
#[derive(Debug)]
struct Malformed {
    /// The declared label, for the message.
    label: String,
    encoding: &'static Encoding,
    /// Offset of the first bad byte in the whole body.
    offset: u64,
    /// The bad bytes (those still at hand: a sequence split across frames shows its tail).
    bytes: Vec<u8>,
    /// The body ended inside a multi-byte sequence.
    truncated: bool,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.encoding.name();
        if self.truncated {
            write!(
                f,
                "the body is declared charset={} but ends inside a {name} sequence at offset {}; \
                 send UTF-8 or fix the charset",
                self.label, self.offset
            )
        } else {
            let bytes: Vec<String> = self.bytes.iter().map(|b| format!("0x{b:02x}")).collect();
            let what = if bytes.len() == 1 { "byte" } else { "bytes" };
            write!(
                f,
                "the body is declared charset={} but {what} {} at offset {} is not valid {name}; \
                 send UTF-8 or fix the charset",
                self.label,
                bytes.join(" "),
                self.offset
            )
        }
    }
}

impl std::error::Error for Malformed {}

enum State {
    /// The first bytes, held until it is known whether they are a UTF-8 BOM.
    Head(BytesMut),
    /// UTF-8: bytes go through as they are.
    Pass,
    /// Converting; `feff` until the first character is out (a UTF-16 BOM decodes to U+FEFF).
    Decode { decoder: Decoder, feff: bool },
}

/// Turns a body's bytes, in as many pieces as they come, into UTF-8 without its BOM.
struct Converter {
    encoding: &'static Encoding,
    label: String,
    state: State,
    /// Bytes of the body taken in so far (for error offsets).
    consumed: u64,
    bom_stripped: bool,
}

impl Converter {
    fn new(encoding: &'static Encoding, label: String) -> Self {
        Self {
            encoding,
            label,
            state: State::Head(BytesMut::new()),
            consumed: 0,
            bom_stripped: false,
        }
    }

    /// Convert the next piece; `last` flushes (a sequence left open is then malformed).
    fn push(&mut self, data: Bytes, last: bool) -> Result<Bytes, Malformed> {
        let data = match &mut self.state {
            State::Head(held) => {
                let head = if held.is_empty() {
                    data
                } else {
                    held.extend_from_slice(&data);
                    std::mem::take(held).freeze()
                };
                match self.head(head, last) {
                    Some(rest) => rest,
                    // Maybe a BOM split across frames: wait for more.
                    None => return Ok(Bytes::new()),
                }
            }
            _ => data,
        };
        if matches!(self.state, State::Decode { .. }) {
            return self.decode(&data, last);
        }
        self.consumed += data.len() as u64;
        Ok(data)
    }

    /// The first bytes: a UTF-8 BOM goes, then the state for the rest; `None` to wait for more.
    fn head(&mut self, head: Bytes, last: bool) -> Option<Bytes> {
        if head.len() < BOM.len() && !last && BOM.starts_with(&head) {
            self.state = State::Head(BytesMut::from(&head[..]));
            return None;
        }
        if head.starts_with(BOM) {
            self.bom_stripped = true;
            self.consumed += BOM.len() as u64;
            self.state = State::Pass;
            return Some(head.slice(BOM.len()..));
        }
        self.state = if self.encoding == UTF_8 {
            State::Pass
        } else {
            State::Decode {
                decoder: self.encoding.new_decoder_without_bom_handling(),
                feff: true,
            }
        };
        Some(head)
    }

    /// Another charset to UTF-8, refusing malformed bytes with their offset.
    fn decode(&mut self, data: &[u8], last: bool) -> Result<Bytes, Malformed> {
        let State::Decode { decoder, feff } = &mut self.state else {
            return Ok(Bytes::copy_from_slice(data));
        };
        let mut out = String::with_capacity(
            decoder
                .max_utf8_buffer_length_without_replacement(data.len())
                .unwrap_or(data.len()),
        );
        let mut read = 0;
        loop {
            let (result, n) =
                decoder.decode_to_string_without_replacement(&data[read..], &mut out, last);
            read += n;
            match result {
                DecoderResult::InputEmpty => break,
                // Can't happen with the capacity above; grow and go on if it does.
                DecoderResult::OutputFull => out.reserve(data.len() - read + 16),
                DecoderResult::Malformed(bad, after) => {
                    // The malformed bytes may have begun in an earlier frame (the decoder
                    // holds them): count from what this frame has.
                    let end = read.saturating_sub(usize::from(after));
                    let start = end.saturating_sub(usize::from(bad));
                    let offset = (self.consumed + end as u64).saturating_sub(u64::from(bad));
                    return Err(Malformed {
                        label: self.label.clone(),
                        encoding: self.encoding,
                        offset,
                        bytes: data.get(start..end).map(<[u8]>::to_vec).unwrap_or_default(),
                        truncated: last && end == data.len() && after == 0,
                    });
                }
            }
        }
        self.consumed += data.len() as u64;
        if *feff && !out.is_empty() {
            *feff = false;
            if let Some(rest) = out.strip_prefix('\u{FEFF}') {
                self.bom_stripped = true;
                return Ok(Bytes::copy_from_slice(rest.as_bytes()));
            }
        }
        Ok(Bytes::from(out))
    }
}

/// A body converted frame by frame.
struct Decoded {
    inner: Body,
    converter: Converter,
    /// A frame already read (to fix the head) to hand out first.
    first: Option<Option<Result<Frame<Bytes>, BoxError>>>,
    /// Bytes still to come when the length is known.
    remaining: Option<u64>,
    done: bool,
}

impl Decoded {
    fn new(inner: Body, converter: Converter) -> Self {
        Self {
            inner,
            converter,
            first: None,
            remaining: None,
            done: false,
        }
    }

    /// Hand `first` out again, then the rest: `length` bytes in all, counting `first`.
    fn replay(&mut self, first: Option<Result<Frame<Bytes>, BoxError>>, length: u64) {
        self.remaining = Some(length);
        self.first = Some(first);
    }

    fn yielded(
        &mut self,
        item: Option<Result<Frame<Bytes>, BoxError>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &item {
            None | Some(Err(_)) => self.done = true,
            Some(Ok(frame)) => {
                if let (Some(left), Some(data)) = (self.remaining.as_mut(), frame.data_ref()) {
                    *left = left.saturating_sub(data.len() as u64);
                }
            }
        }
        Poll::Ready(item)
    }
}

impl HttpBody for Decoded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return this.yielded(first);
        }
        // Bounded by the frames the inner body gives (empty outputs wait for the next one).
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let item = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            };
            let out = match item {
                Some(Err(e)) => return this.yielded(Some(Err(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.converter.push(data, false),
                    // Trailers end the body: flush first, then hand the trailers out next.
                    Err(trailers) => {
                        this.done = true;
                        match this.converter.push(Bytes::new(), true) {
                            Ok(out) if out.is_empty() => return this.yielded(Some(Ok(trailers))),
                            Ok(out) => {
                                this.first = Some(Some(Ok(trailers)));
                                return this.yielded(Some(Ok(Frame::data(out))));
                            }
                            Err(m) => Err(m),
                        }
                    }
                },
                None => {
                    this.done = true;
                    match this.converter.push(Bytes::new(), true) {
                        Ok(out) if out.is_empty() => return Poll::Ready(None),
                        other => other,
                    }
                }
            };
            match out {
                Ok(out) if out.is_empty() => continue,
                Ok(out) => return this.yielded(Some(Ok(Frame::data(out)))),
                // The head is sent: all that is left is to end the body in error (connection closed).
                Err(m) => return this.yielded(Some(Err(Box::new(m)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// A body that only fails (an upstream read error met while buffering).
struct Failed(Option<BoxError>);

impl HttpBody for Failed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.take().map(Err))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    /// The check made before the race says yes exactly when decoding would touch a response.
    #[test]
    fn may_decode_is_what_decoding_touches() {
        for (ct, ce, text) in [
            ("text/plain", None, true),
            ("application/json; charset=gbk", None, true),
            ("application/octet-stream", None, false),
            ("image/png", None, false),
            ("text/html", Some("gzip"), false),
            ("text/html", Some("identity"), true),
            ("", None, false),
        ] {
            let mut h = HeaderMap::new();
            if !ct.is_empty() {
                h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            if let Some(ce) = ce {
                h.insert(CONTENT_ENCODING, HeaderValue::from_static(ce));
            }
            assert_eq!(may_decode(&h), declared_text(&h).is_some(), "{ct} {ce:?}");
            assert_eq!(may_decode(&h), text, "{ct} {ce:?}");
        }
    }

    fn response(ct: &str, body: Body) -> Response<Body> {
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        r
    }

    /// A buffered body with its Content-Length header, as hyper hands one over.
    fn sized(ct: &str, bytes: &[u8]) -> Response<Body> {
        let mut r = response(ct, body::full(bytes.to_vec()));
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        r
    }

    /// A chunked body (no length known), one frame per chunk.
    fn streamed(chunks: Vec<Vec<u8>>) -> Body {
        let frames = stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c)))),
        );
        StreamBody::new(frames).boxed_unsync()
    }

    fn one_byte_frames(bytes: &[u8]) -> Body {
        streamed(bytes.iter().map(|b| vec![*b]).collect())
    }

    fn encode(enc: &'static Encoding, text: &str) -> Vec<u8> {
        let (bytes, used, unmappable) = enc.encode(text);
        assert_eq!(used, enc, "encode with {}", enc.name());
        assert!(!unmappable, "{text} fits {}", enc.name());
        bytes.into_owned()
    }

    async fn bytes_of(r: Response<Body>) -> Result<Bytes, BoxError> {
        r.into_body().collect().await.map(|c| c.to_bytes())
    }

    fn header(r: &Response<Body>, name: http::header::HeaderName) -> Option<&str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    const SAMPLES: [(&Encoding, &str, &str); 7] = [
        (encoding_rs::GBK, "GBK", "你好，世界"),
        (encoding_rs::GBK, "gb2312", "中文测试"),
        (encoding_rs::GB18030, "gb18030", "汉字€"),
        (encoding_rs::BIG5, "big5", "臺灣"),
        (encoding_rs::SHIFT_JIS, "shift_jis", "こんにちは、日本"),
        (encoding_rs::EUC_KR, "euc-kr", "안녕하세요"),
        (encoding_rs::WINDOWS_1252, "ISO-8859-1", "café déjà"),
    ];

    #[tokio::test]
    async fn declared_charsets_become_utf8_with_an_exact_length() {
        for (enc, label, text) in SAMPLES {
            let encoded = encode(enc, text);
            assert_ne!(encoded, text.as_bytes(), "{label}: the test must convert");
            let r = decode_response(sized(&format!("text/html; charset={label}"), &encoded))
                .await
                .unwrap();
            assert_eq!(
                header(&r, CONTENT_LENGTH),
                Some(text.len().to_string().as_str()),
                "{label}"
            );
            assert_eq!(header(&r, CONTENT_TYPE), Some("text/html; charset=utf-8"));
            assert_eq!(bytes_of(r).await.unwrap(), text.as_bytes(), "{label}");
        }
    }

    #[tokio::test]
    async fn json_types_and_quoted_labels_are_converted_and_other_parameters_kept() {
        let text = r#"{"城市":"北京"}"#;
        for ct in [
            "application/json; charset=\"gbk\"",
            "application/problem+json;charset=GBK",
            "Application/JSON; Charset=gbk",
        ] {
            let r = decode_response(sized(ct, &encode(encoding_rs::GBK, text)))
                .await
                .unwrap();
            assert!(
                header(&r, CONTENT_TYPE).unwrap().ends_with("charset=utf-8"),
                "{ct}"
            );
            assert_eq!(bytes_of(r).await.unwrap(), text.as_bytes(), "{ct}");
        }
        let r = decode_response(sized(
            "text/plain; format=flowed; charset=big5; delsp=yes",
            &encode(encoding_rs::BIG5, "臺灣"),
        ))
        .await
        .unwrap();
        assert_eq!(
            header(&r, CONTENT_TYPE),
            Some("text/plain; format=flowed; charset=utf-8; delsp=yes")
        );
    }

    #[tokio::test]
    async fn exactly_one_bom_is_removed() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
        ] {
            let two = [BOM, BOM, b"{}"].concat();
            let r = decode_response(sized(ct, &two)).await.unwrap();
            assert_eq!(header(&r, CONTENT_LENGTH), Some("5"), "{ct}");
            assert_eq!(bytes_of(r).await.unwrap(), &two[3..], "{ct}");
            let one = [BOM, br#"{"a":1}"#].concat();
            let r = decode_response(sized(ct, &one)).await.unwrap();
            assert_eq!(header(&r, CONTENT_LENGTH), Some("7"), "{ct}");
            assert_eq!(bytes_of(r).await.unwrap(), &br#"{"a":1}"#[..], "{ct}");
        }
    }

    #[tokio::test]
    async fn utf8_without_bom_is_untouched_even_if_invalid() {
        let bytes = b"plain \xff text".to_vec();
        let r = decode_response(sized("text/plain; charset=utf-8", &bytes))
            .await
            .unwrap();
        assert_eq!(header(&r, CONTENT_LENGTH), Some("12"));
        assert_eq!(header(&r, CONTENT_TYPE), Some("text/plain; charset=utf-8"));
        assert_eq!(bytes_of(r).await.unwrap(), bytes);
    }

    #[tokio::test]
    async fn a_utf8_bom_wins_over_the_declared_charset() {
        let body = [BOM, "你好".as_bytes()].concat();
        let r = decode_response(sized("text/plain; charset=gbk", &body))
            .await
            .unwrap();
        assert_eq!(header(&r, CONTENT_LENGTH), Some("6"));
        assert_eq!(bytes_of(r).await.unwrap(), "你好".as_bytes());
    }

    #[tokio::test]
    async fn utf16_loses_its_own_bom() {
        let mut body = vec![0xFF, 0xFE];
        body.extend("hi 你".encode_utf16().flat_map(u16::to_le_bytes));
        let r = decode_response(sized("text/plain; charset=utf-16le", &body))
            .await
            .unwrap();
        assert_eq!(bytes_of(r).await.unwrap(), "hi 你".as_bytes());
    }

    #[tokio::test]
    async fn non_text_and_compressed_bodies_are_untouched_and_unpolled() {
        let bytes = [BOM, b"\x89PNG\r\n\x1a\n\xb1\xbb"].concat();
        for (ct, encoding) in [
            ("image/png", None),
            ("application/octet-stream; charset=gbk", None),
            ("text/plain; charset=gbk", Some("gzip")),
            ("application/json", Some("br")),
        ] {
            // A body that fails if polled: untouched means not even read.
            let mut r = response(ct, Failed(Some("polled".into())).boxed_unsync());
            if let Some(e) = encoding {
                r.headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static(e));
            }
            let r = decode_response(r).await.unwrap();
            assert_eq!(header(&r, CONTENT_TYPE), Some(ct));
            assert!(r.body().size_hint().exact().is_none());
            let err = bytes_of(r).await.unwrap_err();
            assert_eq!(err.to_string(), "polled", "{ct}");

            let mut r = sized(ct, &bytes);
            if let Some(e) = encoding {
                r.headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static(e));
            }
            let r = decode_response(r).await.unwrap();
            assert_eq!(
                header(&r, CONTENT_LENGTH),
                Some(bytes.len().to_string().as_str())
            );
            assert_eq!(bytes_of(r).await.unwrap(), bytes, "{ct}");
        }
        let mut r = response("text/plain", body::full(bytes.clone()));
        r.headers_mut().remove(CONTENT_TYPE);
        assert_eq!(
            bytes_of(decode_response(r).await.unwrap()).await.unwrap(),
            bytes
        );
    }

    #[tokio::test]
    async fn identity_encoding_is_not_compression() {
        let mut r = sized("text/plain; charset=gbk", &encode(encoding_rs::GBK, "你好"));
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("identity"));
        let r = decode_response(r).await.unwrap();
        assert_eq!(bytes_of(r).await.unwrap(), "你好".as_bytes());
    }

    #[tokio::test]
    async fn malformed_gbk_is_refused_before_sending_with_its_offset() {
        let mut body = encode(encoding_rs::GBK, "你好");
        body.extend_from_slice(&[0x81, 0x20, b'x']);
        let err = decode_response(sized("text/plain; charset=gbk", &body))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "the body is declared charset=gbk but byte 0x81 at offset 4 is not valid GBK; \
             send UTF-8 or fix the charset"
        );
        // Cut inside a two-byte character.
        let mut cut = encode(encoding_rs::GBK, "你好");
        cut.pop();
        let err = decode_response(sized("text/plain; charset=gbk", &cut))
            .await
            .unwrap_err();
        assert!(
            err.contains("ends inside a GBK sequence at offset 2"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unknown_charsets_are_refused_unless_the_body_is_empty() {
        let err = decode_response(sized("text/plain; charset=klingon", b"abc"))
            .await
            .unwrap_err();
        assert!(err.contains("charset=klingon"), "{err}");
        let err = decode_response(sized("text/plain; charset=iso-2022-kr", b"abc"))
            .await
            .unwrap_err();
        assert!(err.contains("charset=iso-2022-kr"), "{err}");
        let r = decode_response(response("text/plain; charset=klingon", body::empty()))
            .await
            .unwrap();
        assert_eq!(
            header(&r, CONTENT_TYPE),
            Some("text/plain; charset=klingon")
        );
    }

    #[tokio::test]
    async fn an_empty_body_keeps_its_content_length() {
        // A HEAD answer: the length describes the GET's body.
        let mut r = response("text/plain; charset=gbk", body::empty());
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("1234"));
        let r = decode_response(r).await.unwrap();
        assert_eq!(header(&r, CONTENT_LENGTH), Some("1234"));
        assert_eq!(header(&r, CONTENT_TYPE), Some("text/plain; charset=utf-8"));
        assert!(bytes_of(r).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn streamed_bodies_convert_across_frame_boundaries() {
        for (enc, label, text) in SAMPLES {
            let r = decode_response(response(
                &format!("text/plain; charset={label}"),
                one_byte_frames(&encode(enc, text)),
            ))
            .await
            .unwrap();
            assert!(r.headers().get(CONTENT_LENGTH).is_none());
            assert_eq!(header(&r, CONTENT_TYPE), Some("text/plain; charset=utf-8"));
            assert_eq!(bytes_of(r).await.unwrap(), text.as_bytes(), "{label}");
        }
    }

    #[tokio::test]
    async fn a_bom_split_across_frames_is_removed_once() {
        for chunks in [
            vec![vec![0xEF], vec![0xBB, 0xBF, b'{'], vec![b'}']],
            vec![vec![0xEF, 0xBB], vec![0xBF], vec![b'{', b'}']],
            vec![
                vec![],
                vec![0xEF],
                vec![0xBB],
                vec![],
                vec![0xBF],
                vec![b'{'],
                vec![b'}'],
            ],
        ] {
            let r = decode_response(response("application/json", streamed(chunks.clone())))
                .await
                .unwrap();
            assert_eq!(bytes_of(r).await.unwrap(), "{}".as_bytes(), "{chunks:?}");
        }
        let two = [BOM, BOM, b"x"].concat();
        let r = decode_response(response("text/plain", one_byte_frames(&two)))
            .await
            .unwrap();
        assert_eq!(bytes_of(r).await.unwrap(), &two[3..]);
        // A GBK body (BOM-less) whose first bytes look like a BOM's start but are not.
        let gbk = encode(encoding_rs::GBK, "锘x");
        assert_eq!(&gbk[..2], &[0xEF, 0xBB]);
        let r = decode_response(response("text/plain; charset=gbk", one_byte_frames(&gbk)))
            .await
            .unwrap();
        assert_eq!(bytes_of(r).await.unwrap(), "锘x".as_bytes());
        // A body that is only the start of a BOM stays as it is.
        let r = decode_response(response("text/plain", streamed(vec![vec![0xEF, 0xBB]])))
            .await
            .unwrap();
        assert_eq!(bytes_of(r).await.unwrap(), &[0xEF, 0xBB][..]);
    }

    #[tokio::test]
    async fn a_utf8_body_with_a_length_streams_with_an_exact_length() {
        let body = [BOM, "数据".as_bytes(), b" more"].concat();
        let frames: Vec<Vec<u8>> = body.chunks(2).map(<[u8]>::to_vec).collect();
        let frames = stream::iter(
            frames
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c)))),
        );
        let mut r = response("text/plain", StreamBody::new(frames).boxed_unsync());
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let r = decode_response(r).await.unwrap();
        let expected = body.len() - 3;
        assert_eq!(
            header(&r, CONTENT_LENGTH),
            Some(expected.to_string().as_str())
        );
        assert_eq!(r.body().size_hint().exact(), Some(expected as u64));
        assert_eq!(bytes_of(r).await.unwrap(), &body[3..]);
    }

    #[tokio::test]
    async fn a_long_body_is_converted_as_it_streams() {
        // One more byte than BUFFER_LIMIT: known length, yet streamed without Content-Length.
        let unit = encode(encoding_rs::GBK, "长");
        let n = usize::try_from(BUFFER_LIMIT).unwrap() / unit.len() + 1;
        let bytes = unit.repeat(n);
        let r = decode_response(sized("text/plain; charset=gbk", &bytes))
            .await
            .unwrap();
        assert!(r.headers().get(CONTENT_LENGTH).is_none());
        assert!(r.body().size_hint().exact().is_none());
        let out = bytes_of(r).await.unwrap();
        assert_eq!(out.len(), n * "长".len());
        assert!(out.chunks(3).all(|c| c == "长".as_bytes()));
    }

    #[tokio::test]
    async fn malformed_mid_stream_ends_the_body_with_an_error() {
        let mut r = decode_response(response(
            "text/plain; charset=gbk",
            streamed(vec![b"ok".to_vec(), vec![0x81, 0x20]]),
        ))
        .await
        .unwrap();
        let first = r.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ok".as_bytes());
        let err = r.body_mut().frame().await.unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the body is declared charset=gbk but byte 0x81 at offset 2 is not valid GBK; \
             send UTF-8 or fix the charset"
        );
        assert!(r.body_mut().frame().await.is_none());
        assert!(r.body().is_end_stream());
        // A stream that ends inside a character.
        let r = decode_response(response(
            "text/plain; charset=big5",
            streamed(vec![encode(encoding_rs::BIG5, "臺")[..1].to_vec()]),
        ))
        .await
        .unwrap();
        let err = bytes_of(r).await.unwrap_err();
        assert!(
            err.to_string().contains("ends inside a Big5 sequence"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn upstream_read_errors_pass_through_as_body_errors() {
        let failing = StreamBody::new(stream::iter(vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"ab"))),
            Err("reset by peer".into()),
        ]));
        let mut r = response("text/plain; charset=gbk", failing.boxed_unsync());
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("10"));
        let r = decode_response(r).await.unwrap();
        assert!(r.headers().get(CONTENT_LENGTH).is_none());
        assert_eq!(bytes_of(r).await.unwrap_err().to_string(), "reset by peer");
    }

    #[tokio::test]
    async fn trailers_follow_the_flushed_text() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("1"));
        let gbk = encode(encoding_rs::GBK, "尾");
        let frames = stream::iter(vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from(gbk))),
            Ok(Frame::trailers(trailers)),
        ]);
        let r = decode_response(response(
            "text/plain; charset=gbk",
            StreamBody::new(frames).boxed_unsync(),
        ))
        .await
        .unwrap();
        let collected = r.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-checksum"], "1");
        assert_eq!(collected.to_bytes(), "尾".as_bytes());
    }

    /// The table of common types answers what parsing them answers (the parser is the rule).
    #[test]
    fn common_types_agree_with_the_parser() {
        for ct in [
            "application/json",
            "text/plain",
            "text/html",
            "application/javascript",
            "text/javascript",
            "text/css",
            "application/xml",
            "text/xml",
            "application/json; charset=utf-8",
            "application/json;charset=utf-8",
            "application/json; charset=UTF-8",
            "application/json;charset=UTF-8",
            "text/plain; charset=utf-8",
            "text/plain;charset=utf-8",
            "text/html; charset=utf-8",
            "text/html;charset=utf-8",
            "text/html; charset=UTF-8",
            "application/octet-stream",
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
            "image/svg+xml",
        ] {
            let (table, parsed) = (text_type(ct), parse_text_type(ct));
            assert_eq!(table.is_some(), parsed.is_some(), "{ct}");
            assert_eq!(
                table.and_then(|t| t.charset),
                parsed.and_then(|t| t.charset),
                "{ct}"
            );
        }
        // Near the table but not in it: parsed, with the same rules.
        assert_eq!(
            text_type("text/html; charset=gbk").and_then(|t| t.charset),
            Some("gbk")
        );
        assert!(text_type("image/png; x=1").is_none());
        assert!(text_type("Application/JSON").is_some());
    }

    #[test]
    fn text_types() {
        for ct in [
            "text/plain",
            "text/html; charset=gbk",
            "application/json",
            "application/vnd.api+json",
            "application/javascript",
            "application/xml",
            "application/atom+xml",
            // Case does not matter.
            "Text/Plain",
            "APPLICATION/JSON; charset=UTF-8",
            "application/VND.API+JSON",
        ] {
            assert!(text_type(ct).is_some(), "{ct}");
        }
        for ct in [
            "image/png",
            "application/octet-stream",
            "application/jsonx",
            "multipart/form-data; boundary=x",
            "",
            "json",
            "application/+jso",
            "application/x+jsoné",
        ] {
            assert!(text_type(ct).is_none(), "{ct}");
        }
    }
}

//! Response decoding as the platform does it (SPEC section 3, "what an allowed call gets"): for
//! text and JSON responses, one leading UTF-8 BOM removed and a declared non-UTF-8 charset
//! converted to UTF-8, with Content-Length fixed.
//!
//! Bodies up to [`BUFFER_LIMIT`] with a Content-Length are converted whole, so a body that
//! doesn't match its charset is refused (602302) before anything is sent. Larger or chunked
//! bodies are converted as they stream (Content-Length removed); a bad byte sequence found
//! mid-stream ends the body with an error, which closes the connection. Compressed bodies
//! (`Content-Encoding`) and everything that isn't text are left alone, untouched and unpolled.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use encoding_rs::{DecoderResult, Encoding, UTF_8};
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::proxy::body::{self, Body, BoxError};

/// Largest body converted whole (and refused whole when it doesn't convert).
pub const BUFFER_LIMIT: u64 = 8 * 1024 * 1024;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Is this a text or JSON type, and which charset does it declare?
fn text_charset(content_type: &str) -> Option<Option<String>> {
    let mut parts = content_type.split(';');
    let mime = parts.next()?.trim().to_ascii_lowercase();
    let is_text = mime.starts_with("text/")
        || mime == "application/json"
        || (mime.starts_with("application/") && mime.ends_with("+json"))
        || mime == "application/javascript"
        || mime == "application/xml";
    if !is_text {
        return None;
    }
    let charset = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').to_owned())
    });
    Some(charset)
}

/// Decode `response` for the mini program, unless it is not text/JSON.
///
/// # Errors
/// The body declares a charset but its bytes can't be converted, found before anything was
/// sent: the detail for the 602302 refusal.
pub async fn decode_response(response: Response<Body>) -> Result<Response<Body>, String> {
    if response.headers().contains_key(CONTENT_ENCODING) {
        return Ok(response);
    }
    let Some(content_type) = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return Ok(response);
    };
    let Some(charset) = text_charset(&content_type) else {
        return Ok(response);
    };
    let encoding = match charset.as_deref() {
        None => UTF_8,
        Some(label) => match Encoding::for_label(label.as_bytes()) {
            Some(e) => e,
            // An unknown label: the platform can't convert it either.
            None => {
                return Err(format!(
                "the response declares charset={label}, which is not a known encoding; send UTF-8"
            ))
            }
        },
    };
    let (mut parts, body) = response.into_parts();
    if encoding != UTF_8 {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("text/plain")
            .trim()
            .to_owned();
        if let Ok(v) = HeaderValue::from_str(&format!("{mime}; charset=utf-8")) {
            parts.headers.insert(CONTENT_TYPE, v);
        }
    }
    let length = body.size_hint().exact();
    if length.is_some_and(|n| n <= BUFFER_LIMIT) {
        // The exact length is known and bounded (hyper holds the upstream to its Content-Length).
        let bytes = body
            .collect()
            .await
            .map_err(|e| format!("the response body could not be read: {e}"))?
            .to_bytes();
        let converted = convert_whole(&bytes, encoding)?;
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(converted.len()));
        return Ok(Response::from_parts(parts, body::full(converted)));
    }
    parts.headers.remove(CONTENT_LENGTH);
    let streaming = Streaming {
        inner: body,
        encoding,
        decoder: None,
        head: Some(BytesMut::new()),
        done: false,
    };
    Ok(Response::from_parts(parts, body::boxed(streaming)))
}

fn convert_whole(bytes: &Bytes, encoding: &'static Encoding) -> Result<Bytes, String> {
    if encoding == UTF_8 {
        return Ok(bytes
            .strip_prefix(BOM)
            .map_or_else(|| bytes.clone(), |_| bytes.slice(BOM.len()..)));
    }
    match encoding.decode_without_bom_handling_and_without_replacement(bytes) {
        Some(text) => Ok(Bytes::from(text.into_owned())),
        None => {
            let offset = first_bad_byte(bytes, encoding);
            Err(format!(
                "the body is declared charset={} but byte 0x{:02x} at offset {offset} is not valid {}: send UTF-8 or fix the charset",
                encoding.name().to_ascii_lowercase(),
                bytes.get(offset).copied().unwrap_or(0),
                encoding.name()
            ))
        }
    }
}

fn first_bad_byte(bytes: &[u8], encoding: &'static Encoding) -> usize {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(bytes.len() * 3);
    let mut read_total = 0;
    loop {
        let (result, read) =
            decoder.decode_to_string_without_replacement(&bytes[read_total..], &mut out, true);
        read_total += read;
        match result {
            DecoderResult::Malformed(bad, _) => return read_total.saturating_sub(usize::from(bad)),
            DecoderResult::OutputFull => out.reserve(bytes.len()),
            DecoderResult::InputEmpty => return read_total,
        }
    }
}

/// A body converted frame by frame.
struct Streaming {
    inner: Body,
    encoding: &'static Encoding,
    decoder: Option<encoding_rs::Decoder>,
    /// UTF-8 only: the first bytes, held until it is known whether they are a BOM.
    head: Option<BytesMut>,
    done: bool,
}

impl Streaming {
    fn convert(&mut self, data: &[u8], last: bool) -> Result<Bytes, BoxError> {
        if self.encoding == UTF_8 {
            let Some(mut head) = self.head.take() else {
                return Ok(Bytes::copy_from_slice(data));
            };
            head.extend_from_slice(data);
            if head.len() < BOM.len() && !last && BOM.starts_with(&head) {
                self.head = Some(head);
                return Ok(Bytes::new());
            }
            let head = head.freeze();
            return Ok(if head.starts_with(BOM) {
                head.slice(BOM.len()..)
            } else {
                head
            });
        }
        let decoder = self
            .decoder
            .get_or_insert_with(|| self.encoding.new_decoder_without_bom_handling());
        let mut out = String::with_capacity(
            decoder
                .max_utf8_buffer_length(data.len())
                .unwrap_or(data.len() * 3),
        );
        let (result, _) = decoder.decode_to_string_without_replacement(data, &mut out, last);
        match result {
            DecoderResult::InputEmpty => Ok(Bytes::from(out)),
            DecoderResult::Malformed(..) | DecoderResult::OutputFull => Err(format!(
                "the streamed body is not valid {}: connection closed (send UTF-8 or fix the charset)",
                self.encoding.name()
            )
            .into()),
        }
    }
}

impl HttpBody for Streaming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.convert(&data, false) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    },
                    // Trailers pass as they are.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) => {
                    this.done = true;
                    return match this.convert(&[], true) {
                        Ok(out) if out.is_empty() => Poll::Ready(None),
                        Ok(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    fn response(ct: &str, body: Body) -> Response<Body> {
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        r
    }

    fn streamed(chunks: Vec<Vec<u8>>) -> Body {
        let frames = stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c)))),
        );
        body::boxed(StreamBody::new(frames))
    }

    async fn bytes_of(r: Response<Body>) -> Result<Bytes, BoxError> {
        r.into_body().collect().await.map(|c| c.to_bytes())
    }

    #[tokio::test]
    async fn gbk_big5_shift_jis_latin1_become_utf8_with_the_right_length() {
        for (enc, label, text) in [
            (encoding_rs::GBK, "gbk", "你好，世界"),
            (encoding_rs::BIG5, "big5", "臺灣"),
            (encoding_rs::SHIFT_JIS, "shift_jis", "こんにちは"),
            (encoding_rs::WINDOWS_1252, "iso-8859-1", "café"),
        ] {
            let (encoded, _, _) = enc.encode(text);
            let r = decode_response(response(
                &format!("text/plain; charset={label}"),
                body::full(encoded.into_owned()),
            ))
            .await
            .unwrap();
            assert_eq!(
                r.headers()[CONTENT_LENGTH],
                text.len().to_string().as_str(),
                "{label}"
            );
            assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
            assert_eq!(bytes_of(r).await.unwrap(), text.as_bytes(), "{label}");
        }
    }

    #[tokio::test]
    async fn exactly_one_bom_is_removed() {
        let two = [BOM, BOM, b"{}"].concat();
        let r = decode_response(response("application/json", body::full(two.clone())))
            .await
            .unwrap();
        assert_eq!(bytes_of(r).await.unwrap(), &two[3..]);
    }

    #[tokio::test]
    async fn non_text_and_compressed_bodies_are_untouched() {
        let bytes = [BOM, b"\x89PNG"].concat();
        let r = decode_response(response("image/png", body::full(bytes.clone())))
            .await
            .unwrap();
        assert_eq!(bytes_of(r).await.unwrap(), bytes);
        let mut r = response("text/plain; charset=gbk", body::full(bytes.clone()));
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let r = decode_response(r).await.unwrap();
        assert_eq!(bytes_of(r).await.unwrap(), bytes);
    }

    #[tokio::test]
    async fn malformed_gbk_is_refused_before_sending() {
        let err = decode_response(response(
            "text/plain; charset=gbk",
            body::full(vec![0x61, 0x81, 0x20]),
        ))
        .await
        .unwrap_err();
        assert!(err.contains("gbk") && err.contains("offset 1"), "{err}");
    }

    #[tokio::test]
    async fn streamed_bodies_convert_across_frame_boundaries() {
        let (gbk, _, _) = encoding_rs::GBK.encode("流式传输");
        let chunks: Vec<Vec<u8>> = gbk.iter().map(|b| vec![*b]).collect();
        let r = decode_response(response("text/plain; charset=gbk", streamed(chunks)))
            .await
            .unwrap();
        assert!(r.headers().get(CONTENT_LENGTH).is_none());
        assert_eq!(bytes_of(r).await.unwrap(), "流式传输".as_bytes());
        // A BOM split over frames.
        let r = decode_response(response(
            "application/json",
            streamed(vec![vec![0xEF], vec![0xBB, 0xBF, b'{'], vec![b'}']]),
        ))
        .await
        .unwrap();
        assert_eq!(bytes_of(r).await.unwrap(), "{}".as_bytes());
    }

    #[tokio::test]
    async fn malformed_mid_stream_ends_the_body_with_an_error() {
        let r = decode_response(response(
            "text/plain; charset=gbk",
            streamed(vec![b"ok".to_vec(), vec![0x81, 0x20]]),
        ))
        .await
        .unwrap();
        assert!(bytes_of(r).await.is_err());
    }
}

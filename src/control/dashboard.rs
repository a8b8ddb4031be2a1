//! The dashboard page and the QR code of the phone install URL; assets compiled in.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};

use crate::web::body::{full, Body};

const PAGE: &str = include_str!("../../assets/dashboard.html");

pub fn page() -> Response<Body> {
    let mut r = Response::new(full(PAGE));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// `GET /qr.svg?text=...`: a QR code (default: the phone install URL), as SVG.
pub fn qr_svg<B>(req: &Request<B>) -> Response<Body> {
    let text = super::query(req, "text").unwrap_or_else(|| "http://wxsandbox.cert/".to_owned());
    let svg = match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(180, 180)
            .build(),
        Err(_) => String::from("<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
    };
    let mut r = Response::new(full(svg));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    r
}

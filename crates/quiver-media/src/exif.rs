//! EXIF metadata: the fields users filter and sort photos by.

use std::io::Cursor;

use exif::{In, Tag, Value};

/// What Quiver exposes of an image's EXIF block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExifInfo {
    /// Camera maker (`Make`).
    pub make: Option<String>,
    /// Camera model (`Model`).
    pub model: Option<String>,
    /// When the picture was taken (`DateTimeOriginal`, else `DateTime`),
    /// as microseconds since 1970-01-01 in the camera's local time.
    pub taken_at: Option<i64>,
    /// Orientation, 1–8 (1 is upright).
    pub orientation: Option<u16>,
    /// Latitude in degrees, negative south.
    pub gps_latitude: Option<f64>,
    /// Longitude in degrees, negative west.
    pub gps_longitude: Option<f64>,
    /// Altitude in metres, negative below sea level.
    pub gps_altitude: Option<f64>,
}

/// Reads the EXIF block of a JPEG, PNG, WebP or TIFF (a prefix of the file
/// is enough when the block lies in it). `None` when there is none or it
/// cannot be parsed: EXIF is optional and often damaged, and a bad block
/// must not fail a query over the pixels.
pub fn read_exif(bytes: &[u8]) -> Option<ExifInfo> {
    let parsed = std::panic::catch_unwind(|| {
        exif::Reader::new()
            .continue_on_error(true)
            .read_from_container(&mut Cursor::new(bytes))
            .or_else(|e| e.distill_partial_result(|_| {}))
    })
    .ok()?
    .ok()?;
    let text = |tag| {
        let field = parsed.get_field(tag, In::PRIMARY)?;
        match &field.value {
            Value::Ascii(parts) => {
                let s = String::from_utf8_lossy(parts.first()?).trim().to_string();
                (!s.is_empty()).then_some(s)
            }
            _ => None,
        }
    };
    let taken_at = [Tag::DateTimeOriginal, Tag::DateTime]
        .into_iter()
        .find_map(|tag| {
            let field = parsed.get_field(tag, In::PRIMARY)?;
            let Value::Ascii(parts) = &field.value else {
                return None;
            };
            let dt = exif::DateTime::from_ascii(parts.first()?).ok()?;
            to_micros(&dt)
        });
    let orientation = parsed
        .get_field(Tag::Orientation, In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .and_then(|v| u16::try_from(v).ok())
        .filter(|v| (1..=8).contains(v));
    let degrees = |tag, ref_tag, negative: u8| {
        let field = parsed.get_field(tag, In::PRIMARY)?;
        let Value::Rational(parts) = &field.value else {
            return None;
        };
        let [d, m, s] = parts.as_slice() else {
            return None;
        };
        let mut v = d.to_f64() + m.to_f64() / 60.0 + s.to_f64() / 3600.0;
        if !v.is_finite() {
            return None;
        }
        if let Some(r) = parsed.get_field(ref_tag, In::PRIMARY)
            && let Value::Ascii(p) = &r.value
            && p.first().and_then(|p| p.first()) == Some(&negative)
        {
            v = -v;
        }
        Some(v)
    };
    let gps_altitude = parsed
        .get_field(Tag::GPSAltitude, In::PRIMARY)
        .and_then(|f| match &f.value {
            Value::Rational(r) => r.first().map(|r| r.to_f64()).filter(|v| v.is_finite()),
            _ => None,
        })
        .map(|alt| {
            let below = parsed
                .get_field(Tag::GPSAltitudeRef, In::PRIMARY)
                .and_then(|f| f.value.get_uint(0))
                == Some(1);
            if below { -alt } else { alt }
        });
    let info = ExifInfo {
        make: text(Tag::Make),
        model: text(Tag::Model),
        taken_at,
        orientation,
        gps_latitude: degrees(Tag::GPSLatitude, Tag::GPSLatitudeRef, b'S'),
        gps_longitude: degrees(Tag::GPSLongitude, Tag::GPSLongitudeRef, b'W'),
        gps_altitude,
    };
    (info != ExifInfo::default()).then_some(info)
}

/// Days from the civil date, proleptic Gregorian (Howard Hinnant's
/// algorithm), then microseconds.
fn to_micros(dt: &exif::DateTime) -> Option<i64> {
    let (y, m, d) = (i64::from(dt.year), i64::from(dt.month), i64::from(dt.day));
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || dt.hour > 23
        || dt.minute > 59
        || dt.second > 60
    {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400
        + i64::from(dt.hour) * 3600
        + i64::from(dt.minute) * 60
        + i64::from(dt.second);
    Some(secs * 1_000_000 + i64::from(dt.nanosecond.unwrap_or(0) / 1000))
}

/// Builds an EXIF (TIFF) block, for tests and fixtures that need photos
/// with metadata: make, model, `DateTimeOriginal` (`"YYYY:MM:DD HH:MM:SS"`),
/// orientation and a GPS position.
pub fn build_exif(
    make: &str,
    model: &str,
    taken_at: &str,
    orientation: u16,
    gps: Option<(f64, f64)>,
) -> Result<Vec<u8>, exif::Error> {
    use exif::experimental::Writer;
    use exif::{Field, Rational};
    let ascii = |tag, s: &str| Field {
        tag,
        ifd_num: In::PRIMARY,
        value: Value::Ascii(vec![s.as_bytes().to_vec()]),
    };
    let dms = |v: f64| {
        let v = v.abs();
        let d = v.trunc();
        let m = ((v - d) * 60.0).trunc();
        let s = ((v - d) * 60.0 - m) * 60.0;
        Value::Rational(vec![
            Rational::from((d as u32, 1)),
            Rational::from((m as u32, 1)),
            Rational::from(((s * 1000.0).round() as u32, 1000)),
        ])
    };
    let mut fields = vec![
        ascii(Tag::Make, make),
        ascii(Tag::Model, model),
        ascii(Tag::DateTimeOriginal, taken_at),
        Field {
            tag: Tag::Orientation,
            ifd_num: In::PRIMARY,
            value: Value::Short(vec![orientation]),
        },
    ];
    if let Some((lat, lon)) = gps {
        fields.push(ascii(
            Tag::GPSLatitudeRef,
            if lat < 0.0 { "S" } else { "N" },
        ));
        fields.push(Field {
            tag: Tag::GPSLatitude,
            ifd_num: In::PRIMARY,
            value: dms(lat),
        });
        fields.push(ascii(
            Tag::GPSLongitudeRef,
            if lon < 0.0 { "W" } else { "E" },
        ));
        fields.push(Field {
            tag: Tag::GPSLongitude,
            ifd_num: In::PRIMARY,
            value: dms(lon),
        });
    }
    let mut writer = Writer::new();
    for f in &fields {
        writer.push_field(f);
    }
    let mut out = Cursor::new(vec![]);
    writer.write(&mut out, false)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    #[test]
    fn reads_what_was_written() {
        let block = build_exif(
            "Quiver",
            "Test Cam",
            "2024:05:17 13:45:10",
            6,
            Some((48.8584, -2.2945)),
        )
        .unwrap();
        let mut jpeg = vec![];
        let mut enc = image::codecs::jpeg::JpegEncoder::new(&mut jpeg);
        enc.set_exif_metadata(block).unwrap();
        enc.write_image(&[10u8; 8 * 8 * 3], 8, 8, image::ExtendedColorType::Rgb8)
            .unwrap();
        let info = read_exif(&jpeg).unwrap();
        assert_eq!(info.make.as_deref(), Some("Quiver"));
        assert_eq!(info.model.as_deref(), Some("Test Cam"));
        assert_eq!(info.orientation, Some(6));
        // 2024-05-17T13:45:10
        assert_eq!(info.taken_at, Some(1_715_953_510_000_000));
        assert!((info.gps_latitude.unwrap() - 48.8584).abs() < 1e-4);
        assert!((info.gps_longitude.unwrap() + 2.2945).abs() < 1e-4);
        assert_eq!(read_exif(b"not an image"), None);
    }
}

//! The one PNG writer of the pictures (heatmap and report plots): a white RGB canvas drawn with
//! plotters, encoded as PNG and written to an output checked by the output rules
//! ([`crate::output`]), and the shipped font their text is drawn in.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;

use crate::output::{encode_png, OutputError, Prepared};

/// The family name under which the shipped font is registered in plotters' font table.
pub const FONT_FAMILY: &str = "h2o-dejavu-sans";

/// DejaVu Sans (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// The shipped font could not be registered with plotters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FontNotRegistered;

impl std::fmt::Display for FontNotRegistered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the shipped font (DejaVu Sans) could not be registered")
    }
}

/// Registers the shipped font with plotters. Idempotent: registering again replaces the entry
/// with the same bytes. The table is plotters' own; this module keeps no state.
pub fn register_shipped_font() -> Result<(), FontNotRegistered> {
    register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).map_err(|_| FontNotRegistered)
}

/// A picture drawn into an RGB buffer (`[height, width, 3]`).
pub type Canvas<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Fills a `(width, height)` canvas white, draws on it with `draw`, encodes it as PNG and writes
/// it to `out`. A plotters or encoder failure becomes the caller's error through `draw_err`
/// (given the failure's message); a write failure through `From<OutputError>`.
pub fn write_png<E: From<OutputError>>(
    out: &Prepared,
    (width, height): (u32, u32),
    draw_err: impl Fn(String) -> E,
    draw: impl FnOnce(&Canvas<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let canvas = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        canvas.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        draw(&canvas)?;
        canvas.present().map_err(|e| draw_err(e.to_string()))?;
    }
    let png = encode_png(&rgb, width, height).map_err(&draw_err)?;
    Ok(out.write(&png)?)
}

//! The one PNG writer of the pictures (heatmap and report plots): a white RGB canvas drawn with
//! plotters, encoded as PNG and written to an output checked by the output rules
//! ([`crate::output`]).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::output::{encode_png, OutputError, Prepared};

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

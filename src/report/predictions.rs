//! predictions.csv: one line per scored row, in input order, appended as batches finish.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};

pub const HEADER: [&str; 5] = ["row", "id", "label", "probability", "prediction"];

pub struct PredictionsWriter {
    writer: csv::Writer<BufWriter<File>>,
}

impl PredictionsWriter {
    pub fn create(path: &Path) -> Result<PredictionsWriter> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut writer = csv::Writer::from_writer(BufWriter::new(file));
        writer.write_record(HEADER)?;
        Ok(PredictionsWriter { writer })
    }

    pub fn write(
        &mut self,
        row: u64,
        id: Option<&str>,
        label: Option<u8>,
        probability: f64,
        prediction: u8,
    ) -> Result<()> {
        let label = label.map(|l| l.to_string()).unwrap_or_default();
        self.writer.write_record([
            row.to_string().as_str(),
            id.unwrap_or(""),
            label.as_str(),
            probability.to_string().as_str(),
            prediction.to_string().as_str(),
        ])?;
        Ok(())
    }

    /// Pushes buffered lines to the file and the file to disk.
    pub fn sync(&mut self) -> Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().get_ref().sync_data()?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.sync()
    }
}

"""Model building from config and the LightningModule."""

"""Pictures: instances drawn on images, colour splash, and plots (losses, AP, PR curves, confusion)."""

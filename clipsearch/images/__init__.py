"""Images: reading files back, content and perceptual hashes, copies, near-duplicates and labels."""

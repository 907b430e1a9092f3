"""Off-air recording: a tee on the sound card's feed, the encoder thread, the rolling
segment store, serving spans (GET /recordings) and uploading them (upload_recording)."""

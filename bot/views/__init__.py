"""Buttons and modals: confirmations, the face picker for clips with several faces, the enroll-from-message form."""

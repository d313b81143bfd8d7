"""The app's pages, one module per part of it; ``_common`` holds what several of them use."""

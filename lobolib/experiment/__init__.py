"""The experiment: parameters, the sweep over cells, the record store, and the papermill runner."""

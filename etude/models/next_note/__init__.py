"""The next-note task over (pitch, step, duration), which every next-note network family shares:
`task` (windows, loss, the shared sampler, the family's hooks), `heads` (timing heads) and `metrics`
(test metrics beside baselines, sample statistics)."""

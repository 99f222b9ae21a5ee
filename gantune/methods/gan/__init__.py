"""The thesis' method: generative adversarial prompt tuning (M_tunable + a discriminator).

``settings`` (light) holds its settings sections; ``method`` the GanMethod, ``adapter`` M_tunable,
``discriminator`` D, ``rollout`` / ``policy`` the phases of a step.
"""

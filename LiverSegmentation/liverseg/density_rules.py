"""The density rules of the postprocessing as plain tables, importable without numpy or scipy: command lines build
their choices from them at start-up, and the Slicer module and the web app word their review lists with them."""

# The density rules by the name a user switches them off with, and the PostprocessConfig field that None disables.
DENSITY_RULES = {"water": "water_hu", "fluid": "fluid_hu", "parenchyma": "parenchyma_max_delta_hu"}

# What each density rule does to a region the network called tumor, and what the margin check reads in the liver
# right around a tumor (postprocess.darker_margins) and outside the liver next to one (postprocess.tissue_beyond), in
# the words the user reads.
RECLASSIFICATIONS = {
    "cyst": "water density inside the liver, reported as liver (a cyst?)",
    "outside": "water density at the liver's edge, left out (gallbladder or fluid?)",
    "fluid": "at the liver's edge against fluid outside it, left out (the gallbladder's edge?)",
    "parenchyma": "as dense as the liver around it, reported as liver",
    "margin": "darker liver right around a tumor, left as liver: the lesion may be larger than segmented",
    "beyond": "tissue of a tumor's density continuing outside the liver, left out: the lesion may extend beyond it",
}
